"""`train.attention_kernel`: explicit settings are kept, a model without attention is `sdpa`,
`auto` measures both kernels at the run's shape once per CPU and picks by the timings (cached)."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.errors import ConfigError
from lmforge.models import GPTConfig, LSTMConfig, build_model
from lmforge.train import attention_kernel
from lmforge.train.attention_kernel import CACHE_FILE, choose_attention_kernel
from lmforge.train.peak import cpu_key

CPU = torch.device("cpu")
SHAPE = {"batch": 3, "seq_len": 16, "threads": torch.get_num_threads()}


@pytest.fixture
def gpt():
    return build_model(GPTConfig(n_layers=1, n_heads=4, n_kv_heads=2, d_model=32), 50)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path))
    return tmp_path / CACHE_FILE


def _key(dtype: torch.dtype) -> str:
    shape = f"B=3|H=4|Hkv=2|T=16|D=8|math={attention_kernel.MATH_VERSION}"
    return f"{cpu_key(SHAPE['threads'])}|{str(dtype).removeprefix('torch.')}|{shape}"


def test_unknown_setting_names_the_value_and_the_choices(gpt):
    with pytest.raises(ConfigError, match=r"attention_kernel='flash'.*auto, sdpa, math"):
        choose_attention_kernel("flash", gpt, CPU, torch.float32, **SHAPE)


@pytest.mark.parametrize("setting", ["sdpa", "math"])
def test_an_explicit_setting_is_kept_without_measuring(gpt, cache, setting):
    assert choose_attention_kernel(setting, gpt, CPU, torch.bfloat16, **SHAPE) == setting
    assert not cache.exists()


def test_a_model_without_attention_runs_sdpa(cache):
    lstm = build_model(LSTMConfig(n_layers=1, d_model=16, d_hidden=16), 50)
    for setting in ("auto", "math"):
        assert choose_attention_kernel(setting, lstm, CPU, torch.float32, **SHAPE) == "sdpa"
    assert not cache.exists()


def test_auto_measures_once_and_follows_its_timings(gpt, cache, monkeypatch):
    choice = choose_attention_kernel("auto", gpt, CPU, torch.float32, **SHAPE)
    timings = json.loads(cache.read_text())[_key(torch.float32)]
    assert timings["sdpa"] > 0 and timings["math"] > 0
    expected = (
        "math" if timings["math"] * attention_kernel.MATH_MARGIN <= timings["sdpa"] else "sdpa"
    )
    assert choice == expected

    # Later runs read the cache: no measurement, the same choice.
    def no_measuring(*args):
        raise AssertionError("measured again despite the cache")

    monkeypatch.setattr(attention_kernel, "measure_attention_ms", no_measuring)
    assert choose_attention_kernel("auto", gpt, CPU, torch.float32, **SHAPE) == choice


@pytest.mark.parametrize(
    ("sdpa_ms", "math_ms", "expected"),
    [(16.0, 6.0, "math"), (6.6, 7.9, "sdpa"), (10.0, 9.5, "sdpa")],  # the last: within the margin
)
def test_auto_picks_math_only_for_a_clear_measured_gain(gpt, cache, sdpa_ms, math_ms, expected):
    cache.write_text(json.dumps({_key(torch.bfloat16): {"sdpa": sdpa_ms, "math": math_ms}}))
    assert choose_attention_kernel("auto", gpt, CPU, torch.bfloat16, **SHAPE) == expected
