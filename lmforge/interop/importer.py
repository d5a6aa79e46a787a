"""`lmforge import HF_DIR OUT`: a local Hugging Face GPT-2 or Llama model as an lmforge run dir.

Reads `config.json`, the weights (`model.safetensors`, sharded safetensors, or `pytorch_model.bin`
through `torch.load(weights_only=True)`) and the tokenizer (`tokenizer.json`, or GPT-2's
`vocab.json` + `merges.txt`), then writes a run dir with `rundir.create_run_dir`, which `generate`,
`eval`, `finetune` and `init.from` accept. Nothing is downloaded; `transformers` is not needed.
A PEFT adapter dir (given `base=RUN`) becomes a LoRA run dir (`peft.py`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import CheckpointError, ConfigError
from lmforge.interop.config import ImportConfig
from lmforge.interop.hf import family_of_hf_config, from_hf_config, from_hf_state_dict
from lmforge.models import GPTConfig, build_model
from lmforge.verb import Flags

log = logging.getLogger(__name__)


def import_hf(source: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Convert the HF model dir `source` into the lmforge run dir `out`; returns `out`."""
    from lmforge.run.rundir import create_run_dir

    source, out = Path(source), Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} already exists; choose another path or pass --overwrite")
    hf_config = read_hf_config(source)
    family = family_of_hf_config(hf_config)
    cfg = from_hf_config(hf_config)
    tokenizer = read_hf_tokenizer(source)
    vocab_size = int(hf_config.get("vocab_size") or tokenizer.vocab_size)
    model = build_model(cfg, vocab_size)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    state = from_hf_state_dict(read_hf_weights(source), cfg, expected)
    if tokenizer.vocab_size > vocab_size:
        state = _grow_vocab(state, cfg, tokenizer.vocab_size)
        vocab_size = tokenizer.vocab_size
        model = build_model(cfg, vocab_size)
    model.load_state_dict(state)
    create_run_dir(
        out,
        model.eval(),
        cfg,
        tokenizer,
        overwrite=overwrite,
        info={"imported_from": str(source.resolve()), "hf_model_type": family},
    )
    _carry_chat_template(source, out)
    log.info("imported %s (%s, %s parameters)", source, family, f"{model.num_params():,}")
    return out


def _carry_chat_template(source: Path, out: Path) -> None:
    """A model dir's chat template (tokenizer_config.json) becomes the run's, so `lmforge serve`
    renders chats as the model was trained to read them. A list-form template keeps its default."""
    from lmforge.run.tokenizer_config import END_OF_TURN, write_chat_template

    path = source / "tokenizer_config.json"
    try:
        template = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(template, list):
        template = {t.get("name"): t.get("template") for t in template}.get("default")
    if isinstance(template, str) and template:
        write_chat_template(out, template, stop=(END_OF_TURN,) if END_OF_TURN in template else ())


def read_hf_config(source: Path) -> dict[str, Any]:
    if not source.is_dir():
        raise CheckpointError(
            f"{source} is not a directory; point at a local Hugging Face model dir"
        )
    path = source / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{source} has no config.json; is it a Hugging Face model dir?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from None


def read_hf_weights(source: Path) -> dict[str, torch.Tensor]:
    """All tensors of a HF checkpoint dir: single or sharded safetensors, else a .bin file."""
    from safetensors.torch import load_file

    single = source / "model.safetensors"
    if single.is_file():
        return load_file(str(single))
    index = source / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(str(source / shard)))
        return state
    legacy = source / "pytorch_model.bin"
    if legacy.is_file():
        # weights_only refuses arbitrary pickled objects: tensors and plain containers only.
        return torch.load(legacy, map_location="cpu", weights_only=True)
    raise CheckpointError(
        f"{source} has no model.safetensors, model.safetensors.index.json or pytorch_model.bin"
    )


def read_hf_tokenizer(source: Path) -> Tokenizer:
    """The lmforge Tokenizer of a HF dir; `<|endoftext|>` is appended when the vocab lacks it."""
    from lmforge.data.tokenizer import EOT, load_file, load_gpt2

    if (source / "tokenizer.json").is_file():
        tokenizer = load_file(source / "tokenizer.json", [EOT])
    elif (source / "vocab.json").is_file() and (source / "merges.txt").is_file():
        tokenizer = load_gpt2(source, [EOT])
    else:
        raise CheckpointError(
            f"{source} has no tokenizer.json (or vocab.json + merges.txt); lmforge needs a fast "
            "tokenizer: save one with AutoTokenizer.from_pretrained(...).save_pretrained(dir)"
        )
    # A saved truncation/padding setting would make lmforge crop or pad what it encodes.
    tokenizer.inner.no_truncation()
    tokenizer.inner.no_padding()
    return tokenizer


def _grow_vocab(
    state: dict[str, torch.Tensor], cfg: GPTConfig, vocab_size: int
) -> dict[str, torch.Tensor]:
    """Add embedding (and untied head) rows for tokens the tokenizer has beyond the model's vocab.

    The new rows are the mean of the existing ones (as HF's resize_token_embeddings does), so
    `<|endoftext|>` appended to a Llama tokenizer starts as an average token.
    """
    state = dict(state)
    old_size = state["tok_emb.weight"].size(0)
    keys = ["tok_emb.weight"] + ([] if cfg.tie_embeddings else ["lm_head.weight"])
    for key in keys:
        weight = state[key]
        extra = weight.mean(dim=0, keepdim=True).expand(vocab_size - weight.size(0), -1)
        state[key] = torch.cat([weight, extra], dim=0)
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state["tok_emb.weight"]
    log.warning(
        "warning: the tokenizer has %d tokens but the model %d (it lacked '<|endoftext|>'); "
        "the embedding grew, new rows start as the mean embedding",
        vocab_size,
        old_size,
    )
    return state


def run(cfg: ImportConfig, flags: Flags) -> int:
    from lmforge.interop.peft import import_peft, is_peft_dir

    if is_peft_dir(cfg.source):
        if not cfg.base:
            raise ConfigError(
                f"{cfg.source} is a PEFT adapter; name the lmforge run it was made for: "
                f"lmforge import {cfg.source} {cfg.out} base=RUN"
            )
        out = import_peft(cfg.source, cfg.out, cfg.base, overwrite=flags.overwrite)
        print(f"wrote LoRA run dir {out} (base {cfg.base})")
        return 0
    out = import_hf(cfg.source, cfg.out, overwrite=flags.overwrite)
    print(f"wrote run dir {out}")
    print(f"try: lmforge generate {out} -- 'Once upon a time'")
    return 0
