"""Models crossing to and from `transformers` compute the same logits and greedy continuations."""

from __future__ import annotations

import json

import pytest
import torch
from _interop_support import (
    GPT2,
    LLAMA,
    PROMPT,
    char_tokenizer,
    gpt_config,
    make_hf_dir,
    make_run,
    transformers_module,
)

from lmforge.errors import CheckpointError, ConfigError
from lmforge.infer.generate import generate
from lmforge.interop.export import export_hf
from lmforge.interop.importer import import_hf
from lmforge.models import LSTMConfig, build_model
from lmforge.run.rundir import create_run_dir, load_run

TOL = 1e-4


def _tokens(batch: int = 2, length: int = 20, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, char_tokenizer().vocab_size, (batch, length), generator=generator)


def _max_diff(hf_model, ours, tokens: torch.Tensor) -> float:
    with torch.no_grad():
        return (hf_model(tokens).logits - ours(tokens)).abs().max().item()


EXPORT_CASES = {
    "llama-gqa": dict(LLAMA),
    "llama-tied-bias": {**LLAMA, "tie_embeddings": True, "bias": True, "n_kv_heads": None},
    "gpt2-tied": {**GPT2, "tie_embeddings": True},
    "gpt2-nobias-untied": {**GPT2, "bias": False},
}


@pytest.mark.parametrize("case", EXPORT_CASES)
def test_export_loads_in_transformers_with_equal_logits_and_greedy_output(case, tmp_path):
    transformers = transformers_module()
    run_dir, model = make_run(tmp_path / "run", gpt_config(EXPORT_CASES[case]))
    out = export_hf(run_dir, tmp_path / "hf")
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    expected = "LlamaForCausalLM" if case.startswith("llama") else "GPT2LMHeadModel"
    assert type(hf_model).__name__ == expected
    assert _max_diff(hf_model, model, _tokens()) <= TOL

    tokenizer = char_tokenizer()
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    prompt = tokenizer.encode(PROMPT)
    assert hf_tokenizer(PROMPT)["input_ids"] == prompt
    ours = generate(model, prompt, 12, temperature=0, stop_ids=[tokenizer.eot_id])
    with torch.no_grad():
        theirs = hf_model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=12)
    assert theirs[0, len(prompt) :].tolist() == ours  # both stop at the exported eos
    hf_model.generation_config.eos_token_id = None  # and without stopping, the full length
    with torch.no_grad():
        theirs = hf_model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=12)
    assert theirs[0, len(prompt) :].tolist() == generate(model, prompt, 12, temperature=0)


@pytest.mark.parametrize(
    ("family", "options"),
    [
        ("llama", {}),
        ("llama", {"tie_word_embeddings": True, "attention_bias": True}),
        ("gpt2", {}),
        ("gpt2", {"tie_word_embeddings": False, "n_inner": 40}),
    ],
)
def test_import_then_export_round_trip(family, options, tmp_path):
    transformers = transformers_module()
    hf_model = make_hf_dir(tmp_path / "src", family, **options)
    import_hf(tmp_path / "src", tmp_path / "run")
    loaded = load_run(tmp_path / "run")
    tokens = _tokens()
    assert _max_diff(hf_model, loaded.model, tokens) <= TOL
    assert loaded.tokenizer.encode(PROMPT) == char_tokenizer().encode(PROMPT)

    out = export_hf(tmp_path / "run", tmp_path / "back")
    again = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        assert (again(tokens).logits - hf_model(tokens).logits).abs().max().item() <= TOL
    original, returned = hf_model.state_dict(), again.state_dict()
    for key, tensor in original.items():
        assert torch.equal(returned[key], tensor), key
    for key in set(returned) - set(original):  # biases HF's config left out are written as zeros
        assert key.endswith("bias") and not returned[key].any(), key


def test_export_refuses_lstm_and_inexpressible_gpt(tmp_path):
    tokenizer = char_tokenizer()
    lstm = LSTMConfig(n_layers=1, d_model=16, d_hidden=16)
    create_run_dir(tmp_path / "lstm", build_model(lstm, tokenizer.vocab_size), lstm, tokenizer)
    with pytest.raises(ConfigError, match="model.kind='lstm'"):
        export_hf(tmp_path / "lstm", tmp_path / "out")
    run_dir, _ = make_run(tmp_path / "mixed", gpt_config(LLAMA, norm="layernorm"))
    with pytest.raises(ConfigError, match="model.norm='layernorm'"):
        export_hf(run_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_output_dir_rules(tmp_path):
    run_dir, _ = make_run(tmp_path / "run", gpt_config(LLAMA))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already exists"):
        export_hf(run_dir, tmp_path / "busy")
    with pytest.raises(ConfigError, match="not a Hugging Face model dir"):
        export_hf(run_dir, tmp_path / "busy", overwrite=True)
    out = export_hf(run_dir, tmp_path / "hf")
    export_hf(run_dir, out, checkpoint="step_0", dtype="bfloat16", overwrite=True)
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "hf", "run"]  # no temp dirs


def test_import_refusals_name_the_problem(tmp_path):
    make_hf_dir(tmp_path / "scaled", "llama", rope_scaling={"rope_type": "linear", "factor": 2.0})
    with pytest.raises(CheckpointError, match="rope"):
        import_hf(tmp_path / "scaled", tmp_path / "run")
    src = tmp_path / "mistral"
    make_hf_dir(src, "llama")
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "model_type": "mistral"}))
    with pytest.raises(CheckpointError, match="model_type='mistral'"):
        import_hf(src, tmp_path / "run")
    with pytest.raises(CheckpointError, match="no config.json"):
        import_hf(tmp_path, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_import_adds_endoftext_when_the_tokenizer_lacks_it(tmp_path):
    transformers_module()
    src = tmp_path / "src"
    hf_model = make_hf_dir(src, "llama")
    # Rename <|endoftext|> (the last id) so the vocabulary lacks it, as Llama's does.
    data = json.loads((src / "tokenizer.json").read_text())
    for token in data["added_tokens"]:
        if token["content"] == "<|endoftext|>":
            token["content"] = "</s>"
    vocab_table = data["model"]["vocab"]
    vocab_table["</s>"] = vocab_table.pop("<|endoftext|>")
    (src / "tokenizer.json").write_text(json.dumps(data))
    import_hf(src, tmp_path / "run")
    loaded = load_run(tmp_path / "run")
    vocab = hf_model.config.vocab_size
    assert loaded.tokenizer.eot_id == vocab and loaded.model.vocab_size == vocab + 1
    tokens = _tokens()
    with torch.no_grad():
        diff = hf_model(tokens).logits - loaded.model(tokens)[..., :vocab]
    assert diff.abs().max().item() <= TOL
