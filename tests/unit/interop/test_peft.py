"""LoRA runs crossing to and from PEFT: the adapter PEFT loads computes lmforge's logits, PEFT's
merge equals lmforge's merged export, and export -> import -> export keeps keys, values and config
(Llama and GPT-2 layouts; GPT-2 stacks q/k/v adapters on its fused c_attn)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from _interop_support import GPT2, LLAMA, char_tokenizer, gpt_config, make_run, transformers_module
from lmforge_testing import require
from safetensors.torch import load_file

from lmforge.cli import main
from lmforge.errors import ConfigError
from lmforge.interop.export import export_hf
from lmforge.interop.peft import export_peft, import_peft
from lmforge.models.lora import LoRASpec, adapter_parameters, apply_lora
from lmforge.run.rundir import base_reference, create_run_dir, load_run

FAMILIES = {"llama": LLAMA, "gpt2": GPT2}


def _peft():
    require(importlib.util.find_spec("peft") is not None, "peft not installed")
    transformers_module()
    import peft

    return peft


def _lora_run(root: Path, family: str, targets: tuple[str, ...]) -> tuple[Path, Path]:
    """A base run and a LoRA run on it with a random (non-zero) adapter."""
    base, _ = make_run(root / "base", gpt_config(FAMILIES[family]))
    loaded = load_run(base)
    apply_lora(loaded.model, LoRASpec(4, 12.0, 0.0, targets))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in adapter_parameters(loaded.model):
            p.normal_(0, 0.2)
    out = root / "lora"
    reference = base_reference(loaded, out)
    spec = LoRASpec(4, 12.0, 0.0, targets)
    create_run_dir(
        out, loaded.model, loaded.model_config, loaded.tokenizer, adapter=(spec, reference)
    )
    return base, out


CASES = [("llama", ("all-linear",)), ("gpt2", ("q_proj", "v_proj")), ("gpt2", ("all-linear",))]


@pytest.mark.parametrize(("family", "targets"), CASES)
@torch.no_grad()
def test_peft_loads_the_adapter_with_the_same_logits(tmp_path, family, targets):
    peft = _peft()
    transformers = transformers_module()
    base, lora_run = _lora_run(tmp_path, family, targets)
    export_hf(base, tmp_path / "base_hf")
    assert main(["export", str(lora_run), str(tmp_path / "adapter"), "format=peft"]) == 0
    assert main(["export", str(lora_run), str(tmp_path / "merged_hf")]) == 0
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    if family == "gpt2":
        assert "c_attn" in config["target_modules"] and config["fan_in_fan_out"]
        k = 2 if targets == ("q_proj", "v_proj") else 3
        assert config["rank_pattern"] == {"c_attn": 4 * k}
        assert config["alpha_pattern"] == {"c_attn": 12 * k}
    else:
        assert set(config["target_modules"]) == {
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
        }  # fmt: skip

    ids = torch.tensor([char_tokenizer().encode("First Citizen:\nBefore we")])
    ours = load_run(lora_run, merge=False).model(ids)
    hf_base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base_hf").eval()
    peft_model = peft.PeftModel.from_pretrained(hf_base, tmp_path / "adapter").eval()
    theirs = peft_model(ids).logits
    assert (ours - load_run(base).model(ids)).abs().max() > 1e-2  # the adapter matters
    assert torch.allclose(theirs, ours, atol=1e-5), (theirs - ours).abs().max()

    merged_peft = peft_model.merge_and_unload()
    merged_ours = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged_hf").eval()
    assert torch.allclose(merged_peft(ids).logits, merged_ours(ids).logits, atol=1e-5)
    ours_sd, theirs_sd = merged_ours.state_dict(), merged_peft.state_dict()
    for key, tensor in ours_sd.items():
        assert torch.allclose(theirs_sd[key], tensor, atol=1e-5), key


@pytest.mark.parametrize(("family", "targets"), CASES)
def test_export_import_export_keeps_keys_and_config(tmp_path, family, targets):
    base, lora_run = _lora_run(tmp_path, family, targets)
    first = export_peft(lora_run, tmp_path / "a1")
    assert main(["import", str(first), str(tmp_path / "back"), f"base={base}"]) == 0
    back = load_run(tmp_path / "back", merge=False)
    assert back.adapter is not None and back.adapter["base"]["path"] == str(base.resolve())
    ids = torch.tensor([char_tokenizer().encode("Speak, speak.")])
    with torch.no_grad():
        original = load_run(lora_run, merge=False).model(ids)
        assert torch.allclose(back.model(ids), original, atol=1e-6)
    second = export_peft(tmp_path / "back", tmp_path / "a2")
    assert (first / "adapter_config.json").read_text() == (
        second / "adapter_config.json"
    ).read_text()
    one, two = (
        load_file(first / "adapter_model.safetensors"),
        load_file(second / "adapter_model.safetensors"),
    )
    assert sorted(one) == sorted(two)
    for key in one:
        assert torch.equal(one[key], two[key]), key


def test_peft_export_needs_a_lora_run_and_import_needs_a_base(tmp_path):
    base, lora_run = _lora_run(tmp_path, "llama", ("q_proj",))
    with pytest.raises(ConfigError, match="not a LoRA run"):
        export_peft(base, tmp_path / "x")
    adapter = export_peft(lora_run, tmp_path / "adapter")
    with pytest.raises(ConfigError, match="base=RUN"):
        from lmforge.interop.config import ImportConfig
        from lmforge.interop.importer import run
        from lmforge.verb import Flags

        run(ImportConfig(source=str(adapter), out=str(tmp_path / "y")), Flags())
    assert import_peft(adapter, tmp_path / "y", base).is_dir()


def test_a_target_without_a_gpt2_module_is_refused_by_name():
    from lmforge.interop.peft import to_peft_state

    state = {"blocks.0.mlp.gate_proj.lora_A": torch.zeros(2, 4)}
    state["blocks.0.mlp.gate_proj.lora_B"] = torch.zeros(4, 2)
    with pytest.raises(ConfigError, match="gate_proj .* no GPT-2 module"):
        to_peft_state(state, "gpt2", 4)
