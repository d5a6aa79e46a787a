"""`lmforge export RUN OUT`: a run's checkpoint as a Hugging Face model directory.

Writes `config.json` (Llama or GPT-2), `model.safetensors`, `generation_config.json` and the
tokenizer files into a temp dir that is renamed to OUT when complete. Needs no `transformers`:
`interop/hf.py` translates config and weights, `interop/hf_tokenizer.py` the tokenizer. A LoRA run
exports merged (`load_run` folds the adapter in); `format=peft` writes its adapter (`peft.py`). A
span-QA run (`span_qa/`) exports as the family's `*ForQuestionAnswering` model.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import ConfigError
from lmforge.interop.config import ExportConfig
from lmforge.interop.hf import hf_family, to_hf_config, to_hf_state_dict
from lmforge.interop.hf_tokenizer import write_hf_tokenizer
from lmforge.models import GPTConfig
from lmforge.models.heads import HEAD_FILE, SPAN_DIR
from lmforge.run.tokenizer_config import load_chat_template
from lmforge.verb import Flags

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def export_hf(
    run_dir: str | Path,
    out: str | Path,
    checkpoint: str = "latest",
    dtype: str = "float32",
    overwrite: bool = False,
) -> Path:
    """Export `run_dir` at `checkpoint` to the HF model dir `out`; returns `out`."""
    from lmforge.run.rundir import load_run

    out = Path(out)
    _check_out(out, overwrite)
    loaded = load_run(run_dir, checkpoint=checkpoint, device="cpu")
    cfg, model, tokenizer = loaded.model_config, loaded.model, loaded.tokenizer
    family = hf_family(cfg)  # fails first, naming the option, before anything is written
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_model(tmp, model, cfg, tokenizer, dtype)
        if (Path(run_dir) / SPAN_DIR).is_dir():  # a span-QA run: Transformers' QA class
            _write_qa_model(tmp, Path(run_dir) / SPAN_DIR, family, dtype)
        # The template the run is served with (its own, else the default): chats render alike.
        template = load_chat_template(run_dir, warn=False).source
        write_hf_tokenizer(tokenizer, tmp, model_max_length=cfg.max_seq_len, chat_template=template)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s (%s, step %d) as a %s model", run_dir, checkpoint, loaded.step, family)
    return out


def _write_model(
    directory: Path, model: torch.nn.Module, cfg: GPTConfig, tokenizer: Tokenizer, dtype: str
) -> None:
    from safetensors.torch import save_file

    eot = tokenizer.eot_id
    pad = tokenizer.pad_id
    hf_config = to_hf_config(cfg, model.vocab_size, bos_id=eot, eos_id=eot, pad_id=pad)
    hf_config["torch_dtype"] = dtype
    state = to_hf_state_dict(model.state_dict(), cfg)
    state = {k: v.to(_DTYPES[dtype]).contiguous() for k, v in state.items()}
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    generation = {
        "bos_token_id": eot,
        "eos_token_id": eot,
        # Without a pad token HF's generate pads finished rows with end-of-text (and warns).
        "pad_token_id": pad if pad is not None else eot,
    }
    _write_json(directory / "config.json", hf_config)
    _write_json(directory / "generation_config.json", generation)


def _write_qa_model(directory: Path, head_dir: Path, family: str, dtype: str) -> None:
    """Turn the causal-LM export in `directory` into `LlamaForQuestionAnswering` /
    `GPT2ForQuestionAnswering`: the body under `transformer.`, the span head as `qa_outputs`."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(directory / "model.safetensors"))
    state.pop("lm_head.weight", None)  # a QA model has no LM head
    if family == "llama":  # LlamaForQuestionAnswering keeps its LlamaModel as `transformer`
        state = {"transformer." + k.removeprefix("model."): v for k, v in state.items()}
    head = load_file(str(head_dir / HEAD_FILE))
    for name, tensor in head.items():
        state[f"qa_outputs.{name}"] = tensor.to(_DTYPES[dtype]).contiguous()
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    qa_class = "LlamaForQuestionAnswering" if family == "llama" else "GPT2ForQuestionAnswering"
    config["architectures"] = [qa_class]
    _write_json(directory / "config.json", config)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _check_out(out: Path, overwrite: bool) -> None:
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not overwrite:
        raise ConfigError(f"{out} already exists; choose another out or pass --overwrite")
    if not (out / "config.json").is_file():
        raise ConfigError(
            f"{out} exists and is not a Hugging Face model dir (no config.json); refusing to "
            "replace it with --overwrite; choose another out"
        )


def _replace_dir(tmp: Path, out: Path) -> None:
    """Rename the finished temp dir to `out`; an old `out` is moved aside first, then deleted."""
    old = out.with_name(f".{out.name}.old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def run(cfg: ExportConfig, flags: Flags) -> int:
    if cfg.format == "peft":
        from lmforge.interop.peft import export_peft

        out = export_peft(cfg.run, cfg.out, cfg.checkpoint, overwrite=flags.overwrite)
        print(f"wrote PEFT adapter {out}")
        print(f"load it with: PeftModel.from_pretrained(<the base's export>, {str(out)!r})")
        return 0
    out = export_hf(cfg.run, cfg.out, cfg.checkpoint, cfg.dtype, overwrite=flags.overwrite)
    files = ", ".join(sorted(p.name for p in out.iterdir()))
    print(f"wrote {out}: {files}")
    auto = "AutoModelForQuestionAnswering" if (Path(cfg.run) / SPAN_DIR).is_dir() else None
    print(f"load it with: {auto or 'AutoModelForCausalLM'}.from_pretrained({str(out)!r})")
    return 0
