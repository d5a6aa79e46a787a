"""The keys of `lmforge sweep` and its CLI verb; imports no torch, so `--help` stays fast.

A sweep recipe names a `base` training recipe and a `[grid]` of model sizes × token (or compute)
budgets × seeds; `sweep.py` plans the points and trains them (each an ordinary run dir) through
`lmforge.executor`. An `[ability]` table trains a synthetic task instead of a corpus
(`lab/abilities/`). See docs/lab.md for the format.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from lmforge.config import Section
from lmforge.verb import Verb


class GridSection(Section):
    """The points of a sweep: every size × every budget × every seed."""

    sizes: list[list[int]] | None = Field(
        None, description="model sizes as [n_layers, d_model] (or [n_layers, d_model, n_heads])"
    )
    widths: list[int] | None = Field(
        None, description="model widths (d_model); depth = max(1, round(d_model / aspect))"
    )
    aspect: int = Field(64, ge=1, description="with widths: d_model per layer (the depth rule)")
    head_dim: int | None = Field(
        None, ge=1, description="width per attention head (default: the base model's)"
    )
    tokens: list[float] | None = Field(None, description="token budgets D (every size trains D)")
    flops: list[float] | None = Field(
        None, description="compute budgets C (IsoFLOP: each size trains D = C / FLOPs-per-token)"
    )
    lr: list[float] | None = Field(
        None, description="peak learning rate per size, in the order of sizes (default: base's)"
    )
    seeds: list[int] | None = Field(None, description="seeds (default: the base recipe's seed)")
    tasks: list[str] = Field(
        [],
        description="eval tasks per finished point (lmforge eval task=NAME; intrinsic: loss)",
    )

    @model_validator(mode="after")
    def _check(self) -> GridSection:
        if (self.sizes is None) == (self.widths is None):
            raise ValueError("give exactly one of grid.sizes and grid.widths")
        if (self.tokens is None) == (self.flops is None):
            raise ValueError("give exactly one of grid.tokens and grid.flops (IsoFLOP)")
        for size in self.sizes or []:
            if len(size) not in (2, 3) or min(size) < 1:
                raise ValueError(
                    f"grid.sizes entry {size} is not [n_layers, d_model] or "
                    "[n_layers, d_model, n_heads] with positive values"
                )
        budgets = self.tokens if self.tokens is not None else self.flops
        if not budgets or min(budgets) <= 0:
            raise ValueError(f"budgets must be a non-empty list of positive numbers, got {budgets}")
        n_sizes = len(self.sizes or self.widths or [])
        if self.lr is not None and len(self.lr) != n_sizes:
            raise ValueError(
                f"grid.lr has {len(self.lr)} values for {n_sizes} sizes; give one per size"
            )
        return self


class AbilitySection(Section):
    """Train a built-in synthetic task at every grid point instead of the base recipe's data."""

    task: Literal["addition", "modular", "induction"] = Field(
        ..., description="addition | modular | induction (see docs/lab.md)"
    )
    params: dict[str, Any] = Field({}, description="the task's own keys (e.g. digits, reverse, p)")
    examples: list[int] | None = Field(
        None, description="training-set sizes (a data axis of the grid); default the task's"
    )
    model: dict[str, Any] = Field(
        {},
        description='model keys besides the grid\'s sizes (e.g. mlp = "none", kind = "lstm")',
    )
    batch_size: int = Field(512, ge=0, description="examples per step (0: the full training set)")
    lr: float = Field(1e-3, gt=0, description="AdamW peak learning rate (after a linear warm-up)")
    weight_decay: float = Field(1.0, ge=0, description="AdamW decoupled weight decay")
    beta2: float = Field(0.98, gt=0, lt=1, description="AdamW beta2")
    warmup_steps: int = Field(10, ge=0, description="linear learning-rate warm-up steps")
    eval_every: int = Field(100, ge=1, description="score train and test every N steps")
    eval_examples: int = Field(512, ge=1, description="examples per split per evaluation")


class SweepConfig(Section):
    """The keys of `lmforge sweep`."""

    base: str | None = Field(
        None, description="the training recipe every point starts from (a path or packaged name)"
    )
    data: str | None = Field(None, description="data dir (default: the base recipe's data)")
    out: str = Field(..., description="the sweep dir: OUT/runs/<point>/ and OUT/sweep.json")
    workers: int = Field(0, ge=0, description="points trained at once (0: cores // threads)")
    threads: int = Field(1, ge=1, description="CPU threads per point")
    executor: Literal["local", "ray"] = Field(
        "local", description="local (a process pool) or ray (tasks on an existing Ray cluster)"
    )
    address: str | None = Field(
        None, description="Ray cluster address HOST:PORT (default: $RAY_ADDRESS)"
    )
    storage: str | None = Field(
        None, description="Ray: a path every node reaches (required with more than one node)"
    )
    overrides: dict[str, Any] = Field(
        {}, description="training keys (nested tables) set on every point"
    )
    grid: GridSection
    ability: AbilitySection | None = Field(
        None, description="train a synthetic task (addition, modular, induction) at every point"
    )
    fit: bool = Field(False, description="run 'lmforge fit' on the sweep when every point is done")
    include: list[str] = Field(
        [],
        description="more sweep recipes run after this one, each into OUT/<recipe stem> "
        "(a path, or a name under the packaged configs/sweeps/)",
    )

    @model_validator(mode="after")
    def _check(self) -> SweepConfig:
        if self.ability is None and self.base is None:
            raise ValueError("a sweep needs base= (a training recipe) or an [ability] table")
        return self


VERB = Verb(
    name="sweep",
    summary="Train a grid of model sizes x data/compute budgets; one run dir per point.",
    config=SweepConfig,
    run="lmforge.lab.sweep:run",
    positionals=(),
    usage="lmforge sweep RECIPE.toml [out=DIR] [workers=N] [executor=local|ray] [key=value ...]",
)
