"""Training with `train.attention_kernel=math` takes the steps SDPA takes (fp32, to rounding), and
run_info.json records the kernel each run used."""

from __future__ import annotations

import json

import pytest
from _train_support import make_data_dir, train_config, train_losses

from lmforge.train.trainer import run
from lmforge.verb import Flags


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data_dir(tmp_path_factory.mktemp("attention"))


def _train(data, out, kernel: str) -> dict[int, float]:
    cfg = train_config(data, out, compile=False, train__attention_kernel=kernel, sample__every=0)
    assert run(cfg, Flags()) == 0
    info = json.loads((out / "run_info.json").read_text())
    assert info["attention_kernel"] == kernel
    return train_losses(out)


def test_math_attention_trains_to_the_sdpa_losses(data, tmp_path):
    sdpa = _train(data, tmp_path / "sdpa", "sdpa")
    math_path = _train(data, tmp_path / "math", "math")
    assert sdpa.keys() == math_path.keys() and len(sdpa) == 12
    for step, loss in sdpa.items():
        assert abs(math_path[step] - loss) <= 1e-4 * loss, (step, math_path[step], loss)


def test_auto_measures_the_shape_of_one_forward(data, tmp_path, monkeypatch):
    """With gradient accumulation the measured batch is one micro-batch's rows, not the step's."""
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "auto"
    cfg = train_config(
        data, out, compile=False, train__batch_tokens=128, train__max_steps=2, sample__every=0
    )
    assert cfg.train.attention_kernel == "auto" and cfg.train.batch_size == 4
    assert run(cfg, Flags()) == 0
    (key,) = json.loads((tmp_path / "cache" / "attention_kernel.json").read_text())
    assert "|B=4|H=2|Hkv=2|T=16|D=16|" in key, key
    info = json.loads((out / "run_info.json").read_text())
    assert info["attention_kernel"] in ("sdpa", "math")
