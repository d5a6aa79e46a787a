"""An imported run works with generate, eval, init.from and finetune; export brings it back.

A tiny random HF GPT-2 (built locally, no hub) with a char tokenizer is imported through the CLI,
then every downstream verb runs on the result, and `lmforge export` brings it back to HF.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from lmforge_testing import require

from lmforge.cli import main
from lmforge.data.tokenizer import EOT, build_char
from lmforge.interop.hf_tokenizer import write_hf_tokenizer
from lmforge.run.rundir import load_run


@pytest.fixture
def corpus(shared_data, tmp_path):
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:30_000]
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return path


def _tiny_hf_gpt2(path, text: str):
    require(importlib.util.find_spec("transformers") is not None, "transformers not installed")
    import transformers

    tokenizer = build_char([text], [EOT])
    config = transformers.GPT2Config(
        vocab_size=tokenizer.vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=64
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(path)
    write_hf_tokenizer(tokenizer, path, model_max_length=64)
    return model


def test_imported_run_works_with_every_verb(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf_model = _tiny_hf_gpt2(tmp_path / "hf", corpus.read_text(encoding="utf-8"))
    run, data = tmp_path / "imported", tmp_path / "data"
    assert main(["import", str(tmp_path / "hf"), str(run)]) == 0
    assert main(["import", str(tmp_path / "hf"), str(run)]) == 2  # exists: needs --overwrite
    assert main(["import", str(tmp_path / "hf"), str(run), "--overwrite"]) == 0

    gen = ["generate", str(run), "First Citizen:", "max_new_tokens=8", "temperature=0"]
    assert main([*gen, "device=cpu"]) == 0

    # Data tokenized with the imported tokenizer, so init.from and eval accept it.
    tok = ["tokenizer.kind=file", f"tokenizer.path={run / 'tokenizer.json'}"]
    assert main(["prepare", str(corpus), f"out={data}", *tok]) == 0
    assert main(["eval", str(run), f"data={data}", "device=cpu", "max_tokens=2000"]) == 0

    steps = ["train.max_steps=2", "train.batch_size=2", "train.seq_len=32", "eval.every=2"]
    steps += ["eval.batches=1", "train.peak_tflops=0.1", "device=cpu"]
    continued = tmp_path / "continued"
    assert main(["train", str(continued), f"data={data}", f"init.from={run}", *steps]) == 0
    assert load_run(continued).model_config == load_run(run).model_config

    finetuned = tmp_path / "finetuned"
    finetune = ["finetune", str(run), "task=sst2", f"out={finetuned}", "device=cpu"]
    finetune += ["classifier.epochs=1", "classifier.limit_train=16", "classifier.max_len=32"]
    assert main(finetune) == 0
    assert (finetuned / "eval" / "sst2.json").is_file()

    # And back out: the exported model equals the original HF model.
    assert main(["export", str(run), str(tmp_path / "back")]) == 0
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["n_positions"] == 64
    tokens = torch.randint(0, hf_model.config.vocab_size, (1, 16))
    import transformers

    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        assert torch.allclose(back(tokens).logits, hf_model(tokens).logits, atol=1e-5)
