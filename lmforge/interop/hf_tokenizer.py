"""Write an lmforge tokenizer as a Hugging Face tokenizer directory, encoding exactly as lmforge.

Every lmforge kind (char, byte, bpe, gpt2, file) is already a `tokenizer.json`, so the export is
that file plus `tokenizer_config.json` and `special_tokens_map.json`, which make
`AutoTokenizer.from_pretrained` load it as a plain `PreTrainedTokenizerFast` (no model-specific
class that could rewrite the pipeline). lmforge never adds BOS/EOS, and HF encodes with
`add_special_tokens=True` by default, so a post-processor that adds tokens is dropped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import tokenizers

from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import CheckpointError

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

# Encoded by lmforge and by the exported file after writing; any difference aborts the export.
# Mixed scripts, runs of spaces and newlines, digits, and a special token in running text.
_PROBE = "Hello, world!  It's 2024.\n\n\tcafé naïve — 東京 🙂 <|endoftext|> end  \n"


def hf_tokenizer_files(
    tokenizer: Tokenizer, model_max_length: int, chat_template: str | None = None
) -> dict[str, str]:
    """The three files' contents, by name, for an lmforge `Tokenizer` (and its chat template,
    which `transformers`' apply_chat_template and servers such as vLLM read from
    tokenizer_config.json)."""
    data = _exportable_json(tokenizer.inner)
    specials = _special_tokens(tokenizer)
    tokenizer_config = {
        # The generic fast class: it runs tokenizer.json as is, adding nothing of its own.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model_max_length,
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        # lmforge decodes text exactly; HF's clean-up would remove spaces before punctuation.
        "clean_up_tokenization_spaces": False,
        "padding_side": "right",
        **specials,
    }
    if chat_template is not None:
        tokenizer_config["chat_template"] = chat_template
    return {
        "tokenizer.json": json.dumps(data, ensure_ascii=False, indent=1),
        "tokenizer_config.json": json.dumps(tokenizer_config, ensure_ascii=False, indent=1),
        "special_tokens_map.json": json.dumps(specials, ensure_ascii=False, indent=1),
    }


def write_hf_tokenizer(
    tokenizer: Tokenizer,
    out_dir: str | Path,
    model_max_length: int,
    chat_template: str | None = None,
) -> None:
    """Write the HF tokenizer files into `out_dir` and check they encode as `tokenizer` does."""
    out_dir = Path(out_dir)
    files = hf_tokenizer_files(tokenizer, model_max_length, chat_template)
    for name, text in files.items():
        (out_dir / name).write_text(text + "\n", encoding="utf-8")
    exported = tokenizers.Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    ours = tokenizer.encode(_PROBE)
    # HF's fast tokenizers call encode(..., add_special_tokens=True): check exactly that.
    theirs = exported.encode(_PROBE, add_special_tokens=True).ids
    if ours != theirs:
        raise CheckpointError(
            f"the exported tokenizer.json encodes differently from the run's tokenizer "
            f"(kind={tokenizer.kind}): {theirs[:8]} vs {ours[:8]}; please report this"
        )


def _exportable_json(inner: tokenizers.Tokenizer) -> dict[str, Any]:
    data = json.loads(inner.to_str())
    # Truncation/padding settings would make HF crop or pad where lmforge does not.
    data["truncation"] = None
    data["padding"] = None
    probe_plain = inner.encode(_PROBE, add_special_tokens=False).ids
    if inner.encode(_PROBE, add_special_tokens=True).ids != probe_plain:
        # A template that adds BOS/EOS (e.g. an imported Llama tokenizer): lmforge never applies
        # it, and HF would, so it goes. Offsets-only post-processors (ByteLevel) are kept.
        log.info(
            "tokenizer: dropping its %s post-processor (lmforge adds no BOS/EOS)",
            (data.get("post_processor") or {}).get("type"),
        )
        data["post_processor"] = None
    return data


def _special_tokens(tokenizer: Tokenizer) -> dict[str, str]:
    """HF's special-token names for lmforge's ids: end-of-text is both BOS and EOS, as in GPT-2."""
    inner = tokenizer.inner
    eot = inner.id_to_token(tokenizer.eot_id)
    specials = {"bos_token": eot, "eos_token": eot}
    pad_id = tokenizer.pad_id
    # Without a pad token, batched HF calls (lm-eval, generate) pad with end-of-text; attention
    # masks hide it, so its value never matters.
    specials["pad_token"] = inner.id_to_token(pad_id) if pad_id is not None else eot
    unk_id = tokenizer.unk_id
    if unk_id is not None:
        specials["unk_token"] = inner.id_to_token(unk_id)
    return specials
