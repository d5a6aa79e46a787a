"""`lmforge demo`: the whole pipeline on the built-in corpus, printing what it does.

prepare (pydocs, BPE) -> train (configs/demo.toml) -> a sample and the validation bits per byte.
Each stage is the same library call the verbs make; a second run reuses the finished data dir and
run dir (--overwrite retrains). Sized for a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pydantic import Field

from lmforge.config import Section, build_config, resolve_recipe
from lmforge.verb import Flags, Verb

log = logging.getLogger(__name__)


class DemoConfig(Section):
    data: str = Field("data/pydocs", description="data dir to prepare (reused when up to date)")
    out: str = Field("runs/demo", description="run dir to train")
    recipe: str | None = Field(
        None, description="training recipe (default: the packaged demo recipe)"
    )
    max_steps: int | None = Field(None, ge=1, description="override the recipe's train.max_steps")
    pydocs_modules: int | None = Field(
        None, ge=1, description="use only the first N stdlib modules of pydocs (quick runs)"
    )
    prompt: str = Field("The ", description="prompt of the final sample")
    max_new_tokens: int = Field(120, ge=1, description="length of the final sample in tokens")
    seed: int = Field(1337, description="seed of the final sample")


def run(cfg: DemoConfig, flags: Flags) -> int:
    start = time.perf_counter()
    data_dir = _prepare(cfg, flags.overwrite)
    out = _train(cfg, data_dir, flags)
    if out is None:
        return 1
    _report(cfg, out, data_dir)
    print(f"\ndone in {time.perf_counter() - start:.0f} s. Next steps:")
    print(f'  lmforge generate {out} "{cfg.prompt}"      # sample more')
    print(f"  lmforge eval {out}                  # loss, perplexity, bits per byte")
    print("  see docs/training.md for recipes, resume and multi-process training")
    return 0


def _prepare(cfg: DemoConfig, overwrite: bool) -> Path:
    from lmforge.data.prepare import PrepareConfig, format_report, prepare

    print(f"[1/3] prepare: built-in corpus 'pydocs' -> {cfg.data} (BPE tokenizer, 4096 tokens)")
    t0 = time.perf_counter()
    prep = PrepareConfig(source="pydocs", out=cfg.data, pydocs_modules=cfg.pydocs_modules)
    result = prepare(prep, overwrite=overwrite)
    if result.up_to_date:
        print(f"      {cfg.data} is up to date; reusing it")
    else:
        print("      " + format_report(result).replace("\n", "\n      "))
    print(f"      ({time.perf_counter() - t0:.1f} s)")
    return result.out


def _train(cfg: DemoConfig, data_dir: Path, flags: Flags) -> Path | None:
    from lmforge.run import checkpoint as ckpt
    from lmforge.run.config import TrainConfig
    from lmforge.run.rundir import CHECKPOINTS_DIR, is_run_dir
    from lmforge.train.trainer import run as train

    recipe = resolve_recipe(cfg.recipe or "demo")  # works from an installed package too
    overrides: dict = {"data": str(data_dir), "out": cfg.out}
    if cfg.max_steps is not None:
        overrides["train"] = {"max_steps": cfg.max_steps}
    config = build_config(TrainConfig, recipe, overrides)
    out = Path(cfg.out)
    resume = False
    if is_run_dir(out) and not flags.overwrite:
        if ckpt.list_checkpoints(out / CHECKPOINTS_DIR):
            resume = True  # finished: the trainer says so and returns; else it continues
    steps = config.max_steps
    print(f"\n[2/3] train: {recipe.name} -> {out} ({steps} steps, model {_describe(config)})")
    t0 = time.perf_counter()
    code = train(config, Flags(resume=resume, overwrite=flags.overwrite, argv=flags.argv))
    if code != 0:
        print(f"      training stopped with exit code {code}")
        return None
    print(f"      ({time.perf_counter() - t0:.1f} s)")
    return out


def _describe(config) -> str:  # noqa: ANN001 - TrainConfig
    m = config.model
    return f"{m.kind} {m.n_layers} layers x {m.d_model} wide, context {config.seq_len}"


def _report(cfg: DemoConfig, out: Path, data_dir: Path) -> None:
    from lmforge.data.reader import DataDir
    from lmforge.eval.perplexity import score_stream
    from lmforge.infer.generate import generate
    from lmforge.run.rundir import load_run

    print(f"\n[3/3] sample and validation bits per byte ({out})")
    loaded = load_run(out)
    ids = generate(
        loaded.model,
        loaded.tokenizer.encode(cfg.prompt),
        cfg.max_new_tokens,
        temperature=0.8,
        top_k=50,
        seed=cfg.seed,
    )
    text = cfg.prompt + loaded.tokenizer.decode(ids)
    print("      sample: " + text.replace("\n", "\n              "))
    data = DataDir.open(data_dir)
    import numpy as np
    import torch

    tokens = torch.from_numpy(data.tokens("val", 0, data.num_tokens("val")).astype(np.int64))
    window = loaded.config.seq_len
    lengths = torch.as_tensor(loaded.tokenizer.token_byte_lengths())
    score = score_stream(loaded.model, tokens, lengths, window, stride=window)
    print(
        f"      val: {score.tokens:,} tokens, loss {score.loss:.3f} nats/token, "
        f"{score.bits_per_byte:.3f} bits per byte (step {loaded.step})"
    )


VERB = Verb(
    name="demo",
    summary="Run the whole pipeline on the built-in corpus: prepare -> train -> sample + eval.",
    config=DemoConfig,
    run=run,
    flags=("--overwrite", "--debug", "--help"),
)
