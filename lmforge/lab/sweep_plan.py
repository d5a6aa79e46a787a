"""Planning a sweep: the grid of a `SweepConfig` as points, each a full training config.

Every point's parameter counts and FLOPs per token come from the model itself, built on the
`meta` device (no memory, no init), so `C = flops_per_token × D` includes attention exactly as
the trainer's MFU does. A budget in FLOPs becomes steps: D = C / flops_per_token tokens,
rounded to whole optimizer steps, and the point records the D and C it actually trains.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge.config import deep_merge, load_recipe, validate_config
from lmforge.errors import ConfigError
from lmforge.lab.sweep_config import SweepConfig
from lmforge.run.config import TrainConfig

log = logging.getLogger(__name__)

RUNS_DIR = "runs"


@dataclass
class Point:
    """One grid point: its name, its run dir (relative to the sweep dir) and what it trains."""

    name: str
    run_dir: str
    n_layers: int
    d_model: int
    n_heads: int
    seed: int
    lr: float
    budget: str  # "tokens" or "flops"
    budget_value: float
    steps: int
    tokens_per_step: int
    flops_per_token: int
    N: int
    N_non_embedding: int
    N_non_embedding_with_head: int
    train: dict[str, Any] = field(repr=False)  # the TrainConfig as a plain dict
    ability: dict[str, Any] | None = None  # set for synthetic-task points

    @property
    def D(self) -> int:  # noqa: N802 - the scaling-law name
        """Training tokens: every step's tokens."""
        return self.steps * self.tokens_per_step

    @property
    def C(self) -> float:  # noqa: N802 - the scaling-law name
        """Training compute: FLOPs per token (attention included) times D."""
        return float(self.flops_per_token) * self.D

    def record(self) -> dict[str, Any]:
        """The point as sweep.json lists it (without the full training config)."""
        data = asdict(self)
        data.pop("train")
        if data["ability"] is None:
            data.pop("ability")
        data["D"], data["C"] = self.D, self.C
        return data


def format_budget(value: float) -> str:
    """A budget as a short name part: 1e+12 -> '1e12', 3.5e6 -> '3.5e6', 1000 -> '1e3'."""
    exponent = math.floor(math.log10(value))
    mantissa = round(value / 10**exponent, 3)
    if mantissa >= 10:  # rounding carried (9.9996e5 -> 10e5)
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:g}e{exponent}"


def base_train_dict(config: SweepConfig) -> dict[str, Any]:
    """The base recipe with the sweep's `data` and `overrides` applied (not validated yet)."""
    raw = load_recipe(config.base) if config.base else {}
    raw = deep_merge(raw, config.overrides)
    if config.data is not None:
        raw["data"] = config.data
    if raw.get("data"):
        # Absolute: jobs may run in another working directory (Ray workers do).
        raw["data"] = str(Path(raw["data"]).resolve())
    # The sweep decides how long each point trains; a time budget would make points unequal.
    raw.setdefault("train", {})
    raw["train"] = {**raw["train"], "max_time": None}
    # compile=auto decides from measured step times, so two executors (or two reruns) could
    # decide differently and their losses would differ: a sweep compiles only when told to.
    raw.setdefault("compile", False)
    return raw


def model_sizes(config: SweepConfig, base: TrainConfig) -> list[tuple[int, int, int]]:
    """(n_layers, d_model, n_heads) per size, in grid order."""
    grid = config.grid
    head_dim = grid.head_dim or getattr(base.model, "head_dim", None) or 64
    if grid.sizes is not None:
        pairs = [(s[0], s[1], s[2] if len(s) == 3 else None) for s in grid.sizes]
    else:
        pairs = [(max(1, round(w / grid.aspect)), w, None) for w in grid.widths or []]
    sizes = []
    for n_layers, d_model, n_heads in pairs:
        heads = n_heads or max(1, d_model // head_dim)
        if d_model % heads:
            raise ConfigError(
                f"size [{n_layers}, {d_model}]: d_model={d_model} is not divisible into heads of "
                f"width {head_dim}; set grid.head_dim or give [n_layers, d_model, n_heads]"
            )
        sizes.append((n_layers, d_model, heads))
    return sizes


def count_params(model: Any) -> tuple[int, int, int]:
    """(total, non-embedding, non-embedding + head) parameters of a GPT or LSTM model.

    Non-embedding leaves out the token and learned position embeddings and the output head;
    the third count adds the head back (with tied embeddings it is the token embedding's size).
    """
    total = model.num_params()
    embeddings = model.tok_emb.weight.numel()
    pos = getattr(model, "pos_emb", None)
    if pos is not None:
        embeddings += pos.weight.numel()
    head = model.lm_head.weight.numel()
    tied = model.lm_head.weight is model.tok_emb.weight
    non_embedding = total - embeddings - (0 if tied else head)
    if not tied and model.lm_head.bias is not None:
        non_embedding -= model.lm_head.bias.numel()
        head += model.lm_head.bias.numel()
    return total, non_embedding, non_embedding + head


def measure_model(train: TrainConfig, vocab_size: int) -> tuple[tuple[int, int, int], int]:
    """Parameter counts and training FLOPs per token of `train.model`, built without memory."""
    import torch

    from lmforge.models import build_model

    with torch.device("meta"):
        model = build_model(train.model, vocab_size)
    return count_params(model), int(model.flops_per_token(train.seq_len))


def vocab_size_of(data: str | None) -> int:
    from lmforge.data.reader import DataDir

    if data is None:
        raise ConfigError("the sweep has no data dir: set data=PATH (or data in the base recipe)")
    return int(DataDir.open(data).meta["vocab_size"])


def plan_points(config: SweepConfig) -> list[Point]:
    """Every point of the grid, sizes × budgets × seeds, with configs ready to train."""
    raw = base_train_dict(config)
    base = validate_config(TrainConfig, raw, source=config.base)
    if base.model.kind != "gpt":
        raise ConfigError(
            f"a sweep varies GPT sizes, but the base recipe's model.kind is {base.model.kind!r}; "
            "use a gpt base recipe"
        )
    vocab = vocab_size_of(base.data)
    grid = config.grid
    seeds = grid.seeds or [base.seed]
    budgets = [("tokens", b) for b in grid.tokens or []] + [("flops", b) for b in grid.flops or []]
    points = []
    for i, (n_layers, d_model, n_heads) in enumerate(model_sizes(config, base)):
        lr = grid.lr[i] if grid.lr is not None else base.optim.lr
        model = {"n_layers": n_layers, "d_model": d_model, "n_heads": n_heads}
        sized = deep_merge(raw, {"model": model, "optim": {"lr": lr}})
        sized.get("model", {}).pop("n_kv_heads", None)  # a base GQA ratio may not divide
        for kind, value in budgets:
            for seed in seeds:
                size = (n_layers, d_model, n_heads)
                many = len(seeds) > 1
                explicit = grid.sizes is not None and len(grid.sizes[i]) == 3
                points.append(
                    _point(config, sized, vocab, size, lr, kind, value, seed, many, explicit)
                )
    check_unique(points)
    return points


def _point(
    config: SweepConfig,
    sized: dict[str, Any],
    vocab: int,
    size: tuple[int, int, int],
    lr: float,
    kind: str,
    value: float,
    seed: int,
    many_seeds: bool,
    explicit_heads: bool = False,
) -> Point:
    n_layers, d_model, n_heads = size
    train = validate_config(TrainConfig, {**sized, "seed": seed}, source=config.base)
    (total, non_emb, with_head), fpt = measure_model(train, vocab)
    tokens_per_step = train.train.batch_tokens or train.train.batch_size * train.seq_len
    target = value if kind == "tokens" else value / fpt
    steps = max(1, round(target / tokens_per_step))
    if steps * tokens_per_step > 1.5 * target:
        log.warning(
            "warning: point l%d_d%d: one step (%d tokens) is more than the budget's %.3g tokens; "
            "it trains 1 step, above its budget (raise the budget or lower train.batch_size)",
            n_layers, d_model, tokens_per_step, target,
        )  # fmt: skip
    heads = f"h{n_heads}_" if explicit_heads else ""
    name = f"l{n_layers}_d{d_model}_{heads}{'t' if kind == 'tokens' else 'c'}{format_budget(value)}"
    if many_seeds:
        name += f"_s{seed}"
    run_dir = f"{RUNS_DIR}/{name}"
    out = str((Path(config.out) / run_dir).resolve())
    final = deep_merge(sized, {"seed": seed, "out": out, "train": {"max_steps": steps}})
    final = deep_merge(final, {"train": {"threads": config.threads}})
    validate_config(TrainConfig, final, source=config.base)  # fail now, not in a worker
    return Point(
        name=name,
        run_dir=run_dir,
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        seed=seed,
        lr=lr,
        budget=kind,
        budget_value=value,
        steps=steps,
        tokens_per_step=tokens_per_step,
        flops_per_token=fpt,
        N=total,
        N_non_embedding=non_emb,
        N_non_embedding_with_head=with_head,
        train=final,
    )


def check_unique(points: list[Point]) -> None:
    seen: set[str] = set()
    for point in points:
        if point.name in seen:
            raise ConfigError(
                f"the grid has two points named {point.name}; remove duplicate sizes or budgets"
            )
        seen.add(point.name)
