"""`generate`: the one-prompt, token-ids-in, token-ids-out entry point (the trainer's samples).

A thin call into `Generator` (generator.py), which owns the only decode loop: prefill + cached
decode, a prompt longer than the context cropped from the left, and a full GPT cache rebuilt from
the newest tokens (a sliding window).
"""

from __future__ import annotations

from torch import nn

from lmforge.infer.generator import GenerationParams, Generator


def generate(
    model: nn.Module,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop_ids: list[int] | None = None,
) -> list[int]:
    """The new token ids after `prompt_ids` (the prompt itself not included).

    Stops after `max_new_tokens` or right after emitting a token in `stop_ids` (kept in the
    output). An empty prompt is an error: start from a document boundary (the eot id) instead.
    """
    if not prompt_ids:
        raise ValueError("prompt_ids is empty; pass at least one token (e.g. the eot id)")
    params = GenerationParams(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        stop_ids=tuple(stop_ids or ()),
    )
    completion = Generator(model).generate([prompt_ids], params)[0]
    stop = [completion.stop_id] if completion.stop_id is not None else []
    return completion.token_ids + stop
