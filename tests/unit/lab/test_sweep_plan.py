"""Sweep planning: the grid's points, their N three ways, D and C (IsoFLOP), names and errors.

Counts are checked against a real (not meta) model and by hand from the shapes; no training.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmforge.config import validate_config
from lmforge.data.prepare import PrepareConfig, prepare
from lmforge.errors import ConfigError
from lmforge.lab.sweep_config import SweepConfig
from lmforge.lab.sweep_plan import count_params, format_budget, plan_points
from lmforge.models import build_model
from lmforge.models.config import GPTConfig

BASE = """
[model]
kind = "gpt"
n_layers = 2
d_model = 32
n_heads = 2
max_seq_len = 16
[train]
batch_size = 4
max_time = 30
[optim]
lr = 3e-3
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sweepdata")
    (root / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog.\n" * 200)
    cfg = PrepareConfig(source=str(root / "corpus.txt"), out=str(root / "data"),
                        tokenizer={"kind": "char"})  # fmt: skip
    return prepare(cfg).out


def _config(tmp_path: Path, data: Path, **grid) -> SweepConfig:
    (tmp_path / "base.toml").write_text(BASE)
    raw = {"base": str(tmp_path / "base.toml"), "data": str(data), "out": str(tmp_path / "sw"),
           "grid": grid}  # fmt: skip
    return validate_config(SweepConfig, raw)


def test_isoflop_points_train_c_over_flops_per_token(tmp_path: Path, data_dir: Path) -> None:
    config = _config(tmp_path, data_dir, sizes=[[1, 16], [2, 32], [3, 64]], flops=[2e8, 1e9])
    points = plan_points(config)
    assert [p.name for p in points] == [
        "l1_d16_c2e8", "l1_d16_c1e9", "l2_d32_c2e8", "l2_d32_c1e9", "l3_d64_c2e8", "l3_d64_c1e9",
    ]  # fmt: skip
    vocab = 0
    for p in points:
        assert p.tokens_per_step == 4 * 16
        assert p.D == p.steps * p.tokens_per_step
        assert p.C == p.flops_per_token * p.D
        # Whole steps: C is the budget to within half a step's FLOPs.
        assert abs(p.C - p.budget_value) <= p.flops_per_token * p.tokens_per_step / 2 + 1e-6
        assert p.train["train"]["max_steps"] == p.steps
        assert p.train["train"]["max_time"] is None  # the base's time budget is off
        assert Path(p.train["out"]).is_absolute() and p.train["out"].endswith(p.run_dir)
        cfg = GPTConfig(n_layers=p.n_layers, d_model=p.d_model, n_heads=p.n_heads,
                        max_seq_len=16)  # fmt: skip
        vocab = vocab or _vocab(data_dir)
        model = build_model(cfg, vocab)
        assert p.flops_per_token == model.flops_per_token(16)  # attention included
        assert p.N == sum(t.numel() for t in model.parameters())
    # Bigger models get fewer tokens at the same budget.
    small, big = points[0], points[4]
    assert small.D > big.D and small.flops_per_token < big.flops_per_token


def _vocab(data: Path) -> int:
    import json

    return json.loads((data / "meta.json").read_text())["vocab_size"]


def test_param_counts_by_hand() -> None:
    vocab, d, L = 50, 32, 2
    for tied in (False, True):
        cfg = GPTConfig(n_layers=L, d_model=d, n_heads=2, max_seq_len=16, tie_embeddings=tied,
                        pos_emb="learned")  # fmt: skip
        model = build_model(cfg, vocab)
        total, non_emb, with_head = count_params(model)
        ff = cfg.ff_dim
        block = 4 * d * d + 3 * d * ff + 2 * d  # q,k,v,o + SwiGLU + two RMSNorm weights
        assert non_emb == L * block + d  # + the final norm
        assert with_head == non_emb + vocab * d
        emb = vocab * d + 16 * d
        assert total == non_emb + emb + (0 if tied else vocab * d)


def test_tokens_grid_lr_seeds_and_widths(tmp_path: Path, data_dir: Path) -> None:
    config = _config(tmp_path, data_dir, widths=[32, 64], aspect=32, head_dim=16,
                     tokens=[640], lr=[1e-3, 5e-4], seeds=[1, 2])  # fmt: skip
    points = plan_points(config)
    assert [(p.n_layers, p.d_model, p.n_heads, p.seed) for p in points] == [
        (1, 32, 2, 1), (1, 32, 2, 2), (2, 64, 4, 1), (2, 64, 4, 2),
    ]  # fmt: skip
    assert [p.name for p in points][:2] == ["l1_d32_t6.4e2_s1", "l1_d32_t6.4e2_s2"]
    assert [p.lr for p in points] == [1e-3, 1e-3, 5e-4, 5e-4]
    assert all(p.steps == 10 and p.D == 640 for p in points)
    assert points[2].train["optim"]["lr"] == 5e-4 and points[3].train["seed"] == 2


def test_format_budget() -> None:
    assert format_budget(1e12) == "1e12"
    assert format_budget(3.5e6) == "3.5e6"
    assert format_budget(1000) == "1e3"
    assert format_budget(9.99999e5) == "1e6"


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"sizes": [[1, 16]], "widths": [16], "tokens": [1]}, "exactly one of grid.sizes"),
        ({"sizes": [[1, 16]], "tokens": [1], "flops": [1]}, "exactly one of grid.tokens"),
        ({"sizes": [[1, 16]], "tokens": [1], "lr": [1e-3, 1e-3]}, "one per size"),
        ({"sizes": [[1]], "tokens": [1]}, "is not [n_layers, d_model]"),
        ({"sizes": [[1, 16]], "tokens": [0]}, "positive"),
    ],
)
def test_bad_grids_name_the_key(tmp_path: Path, data_dir: Path, grid: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        _config(tmp_path, data_dir, **grid)


def test_heads_that_do_not_divide_and_missing_data(tmp_path: Path, data_dir: Path) -> None:
    config = _config(tmp_path, data_dir, sizes=[[1, 24, 5]], tokens=[640])
    with pytest.raises(ConfigError, match="d_model=24"):
        plan_points(config)
    config = _config(tmp_path, tmp_path / "nowhere", sizes=[[1, 16]], tokens=[640])
    with pytest.raises(Exception, match="does not exist"):
        plan_points(config)


def test_meta_build_matches_a_real_build() -> None:
    cfg = GPTConfig(n_layers=2, d_model=32, n_heads=2, max_seq_len=16)
    with torch.device("meta"):
        meta = build_model(cfg, 40)
    assert count_params(meta) == count_params(build_model(cfg, 40))


def test_a_changed_recipe_is_not_resumed_into_old_run_dirs(tmp_path: Path, data_dir: Path) -> None:
    import json

    from lmforge.lab.sweep import SWEEP_FILE, fingerprint, run_sweep

    config = _config(tmp_path, data_dir, sizes=[[1, 16]], tokens=[640])
    (point,) = plan_points(config)
    out = Path(config.out)
    (out / point.run_dir).mkdir(parents=True)
    record = {"name": point.name, "fingerprint": fingerprint(point)}
    (out / SWEEP_FILE).write_text(json.dumps({"format_version": 1, "points": [record]}))
    changed = _config(tmp_path, data_dir, sizes=[[1, 16]], tokens=[640], lr=[1e-2])
    assert fingerprint(plan_points(changed)[0]) != record["fingerprint"]
    with pytest.raises(ConfigError, match="other settings"):
        run_sweep(changed)
    # Threads are not a setting of the point: another layout may resume it.
    threads = validate_config(SweepConfig, {**config.model_dump(), "threads": 2})
    assert fingerprint(plan_points(threads)[0]) == record["fingerprint"]
