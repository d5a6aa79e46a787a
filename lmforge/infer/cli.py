"""`lmforge generate RUN "prompt" [key=value ...]`: continue text with a trained run.

Stdout carries only the continuation, streamed as it is decoded (with `prompts=FILE`: one JSON
object per line); statistics and notes go to stderr. The prompt is encoded exactly as the run's
tokenizer.json encodes it (no hidden BOS/EOS); an empty prompt starts a new document (the
end-of-text token). `-i` opens the interactive session of `interactive.py`. The config schema and
the verb are in `config.py` (no torch import, so `--help` is quick).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

from lmforge.errors import ConfigError, DataError
from lmforge.infer.beam import beam_texts
from lmforge.infer.config import GenerateConfig
from lmforge.infer.generator import GenerationParams, GenerationStats, Generator, encode_prompt
from lmforge.infer.inference_model import prepare_for_decoding
from lmforge.runtime import resolve_device, resolve_dtype, set_threads
from lmforge.verb import Flags

log = logging.getLogger(__name__)


def run(cfg: GenerateConfig, flags: Flags) -> int:
    from lmforge.run.rundir import load_run

    if not cfg.run:
        raise ConfigError('generate needs a run dir: lmforge generate runs/x "Once upon a time"')
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    loaded = load_run(cfg.run, cfg.checkpoint, device)
    model = prepare_for_decoding(
        loaded.model, resolve_dtype(cfg.dtype), cfg.compile, cfg.linear_kernel
    )
    tokenizer = loaded.tokenizer
    generator = Generator(model, tokenizer, compile=cfg.compile)
    params = cfg.params(stop_ids=(tokenizer.eot_id,))
    if flags.interactive:
        from lmforge.infer.interactive import run_repl

        return run_repl(generator, params, cfg)
    if cfg.prompts:
        return _run_file(generator, params, cfg, sys.stdout)
    if cfg.prompt is None:
        raise ConfigError(
            'give a prompt: lmforge generate runs/x "Once upon a time" (or -i, or prompts=FILE)'
        )
    prompt = sys.stdin.read() if cfg.prompt == "-" else cfg.prompt
    return _run_one(generator, params, cfg, encode_prompt(tokenizer, prompt), sys.stdout)


def _run_one(
    generator: Generator, params: GenerationParams, cfg: GenerateConfig, ids: list[int], out: TextIO
) -> int:
    if cfg.beam_size > 1:
        for i, text in enumerate(beam_texts(generator, [ids], params, cfg.beam_size)):
            _write(out, text if i == 0 else "\n\n" + text)
        return 0
    job = generator.start([ids], params, num_samples=cfg.num_samples, stream=True)
    if cfg.num_samples == 1:
        for _, delta in job:
            _write(out, delta)
    else:  # rows decode together; print each sample whole, in order
        for _ in job:
            pass
        for i, completion in enumerate(job.completions):
            print(f"--- sample {i + 1}/{cfg.num_samples} ---", file=sys.stderr, flush=True)
            _write(out, completion.text if i == 0 else "\n\n" + completion.text)
    _report(job.stats, out)
    return 0


def _write(out: TextIO, text: str) -> None:
    out.write(text)
    out.flush()


def _report(stats: GenerationStats, out: TextIO) -> None:
    if out.isatty():
        print(file=sys.stderr)  # the continuation has no final newline of its own
    print(
        f"[{stats.prompt_tokens} prompt tokens, {stats.new_tokens} new tokens, first token "
        f"{stats.first_token_s * 1e3:.0f} ms, {stats.decode_tokens_per_s:.1f} tokens/s]",
        file=sys.stderr,
    )


# ---------------------------------------------------------------------------------------------
# prompts=FILE -> JSONL


def read_prompts(path: str | Path) -> list[dict[str, Any]]:
    """Prompt records from a .jsonl file (objects with a 'prompt' field; other fields are passed
    through) or a text file (each non-empty line is a prompt)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"prompts={path} does not exist; give a .jsonl or text file of prompts")
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix != ".jsonl":
        records = [{"prompt": line} for line in lines if line.strip()]
    else:
        records = [_parse_record(line, path, i + 1) for i, line in enumerate(lines) if line.strip()]
    if not records:
        raise DataError(f"{path} holds no prompts; write one prompt per line (or JSONL objects)")
    return records


def _parse_record(line: str, path: Path, number: int) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{number} is not valid JSON ({exc.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
        raise DataError(f'{path}:{number} needs a "prompt" string field, e.g. {{"prompt": "Hi"}}')
    return record


def _run_file(
    generator: Generator, params: GenerationParams, cfg: GenerateConfig, out: TextIO
) -> int:
    records = read_prompts(cfg.prompts)
    tokenizer = generator.tokenizer
    for start in range(0, len(records), cfg.batch_size):
        batch = records[start : start + cfg.batch_size]
        ids = [encode_prompt(tokenizer, r["prompt"]) for r in batch]
        if cfg.beam_size > 1:
            texts = beam_texts(generator, ids, params, cfg.beam_size)
            rows = [(r, 0, {"completion": t}) for r, t in zip(batch, texts, strict=True)]
        else:
            completions = generator.generate(ids, params, num_samples=cfg.num_samples)
            rows = [
                (batch[i // cfg.num_samples], i % cfg.num_samples, _fields(c))
                for i, c in enumerate(completions)
            ]
        for record, sample, fields in rows:
            line = {**record, "sample": sample, **fields}
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
        out.flush()
    log.info("generated for %d prompts from %s", len(records), cfg.prompts)
    return 0


def _fields(completion: Any) -> dict[str, Any]:
    return {
        "completion": completion.text,
        "finish_reason": completion.finish_reason,
        "new_tokens": len(completion.token_ids),
    }
