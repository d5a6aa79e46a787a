"""LoRA fine-tuning end to end on tiny runs: the run dir holds the adapter and names its base, the
base's tensors are untouched, the optimizer holds state for the adapters only, `load_run`,
`eval`, `generate` and `init.from` accept the run, and a missing or changed base is an error."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmforge.data.tokenizer import EOT, build_char
from lmforge.errors import CheckpointError, ConfigError
from lmforge.finetune import finetune
from lmforge.finetune.config import FinetuneConfig
from lmforge.models import GPTConfig, build_model
from lmforge.models.lora import ADAPTER_CONFIG, ADAPTER_FILE, LoRALinear
from lmforge.run.rundir import create_run_dir, load_run
from lmforge.verb import Flags

TEXT = "abcdefghijklmnopqrstuvwxyz .,:!?\n0123456789=+"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    tokenizer = build_char([TEXT], [EOT])
    cfg = GPTConfig(n_layers=2, n_heads=2, d_model=32, max_seq_len=32)
    model = build_model(cfg, tokenizer.vocab_size)
    return create_run_dir(tmp_path_factory.mktemp("base") / "gpt", model, cfg, tokenizer)


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("task")
    rng = random.Random(0)
    for split, n in (("train", 48), ("dev", 16), ("test", 16)):
        lines = []
        for _ in range(n):
            label = rng.random() < 0.5
            word = rng.choice(["good", "great"] if label else ["bad", "awful"])
            lines.append(f"{'pos' if label else 'neg'} the film was {word}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    rows = [{"prompt": f"{a}+{b}=", "response": str(a + b)} for a in range(9) for b in range(5)]
    (root / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _sft(base: Path, task_dir: Path, out: Path, **lora) -> FinetuneConfig:
    data = str(task_dir / "sft.jsonl")
    task = {"name": "sft_jsonl", "train": data, "test": data}
    sft = {"max_steps": 12, "batch_size": 8, "eval_every": 6, "eval_batches": 1, "lr": 1e-2}
    sft |= {"eval_limit": 4}
    return FinetuneConfig(
        init=str(base), out=str(out), task=task, device="cpu", threads=1, sft=sft,
        lora={"rank": 4, **lora},
    )  # fmt: skip


@pytest.fixture(scope="module")
def sft_run(base, task_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sft") / "lora"
    assert finetune(_sft(base, task_dir, out, targets="all-linear"), Flags()) == 0
    return out


def test_lora_sft_run_holds_the_adapter_and_its_base(base, sft_run):
    name = (sft_run / "checkpoints" / "latest").read_text().strip()
    ckpt = sft_run / "checkpoints" / name
    assert (ckpt / ADAPTER_FILE).is_file() and not (ckpt / "model.safetensors").exists()
    meta = json.loads((ckpt / ADAPTER_CONFIG).read_text())
    assert meta["rank"] == 4 and meta["alpha"] == 8.0 and meta["targets"] == ["all-linear"]
    assert meta["base"]["path"] == str(base.resolve()) and len(meta["base"]["sha256"]) == 64
    assert len(meta["modules"]) == 14  # 2 blocks x (q, k, v, o, gate, up, down)
    adapter = load_file(str(ckpt / ADAPTER_FILE))
    assert any(torch.count_nonzero(t) for k, t in adapter.items() if k.endswith("lora_B"))
    # The optimizer held state for the adapters only: AdamW's two moments, <= 3x their size.
    n_adapter = sum(t.numel() for t in adapter.values())
    optim = torch.load(ckpt / "optimizer.pt", weights_only=True)
    n_state = sum(v.numel() for s in optim["state"].values() for v in s.values() if v.dim() > 0)
    assert 0 < n_state <= 3 * n_adapter


def test_base_tensors_are_bit_identical_after_training(base, sft_run):
    original = load_run(base).model.state_dict()
    adapted = load_run(sft_run, merge=False)
    assert adapted.adapter is not None
    assert any(isinstance(m, LoRALinear) for m in adapted.model.modules())
    state = adapted.model.state_dict()
    for key, tensor in original.items():
        assert torch.equal(state[key], tensor), key
    # The merged model (what generate/eval get) computes the adapted function.
    merged = load_run(sft_run).model
    tokens = torch.randint(0, 40, (2, 10))
    with torch.no_grad():
        assert torch.allclose(merged(tokens), adapted.model(tokens), atol=1e-5)
        assert not torch.allclose(merged(tokens), load_run(base).model(tokens), atol=1e-3)


def test_lora_run_is_accepted_by_generate_eval_and_finetune(sft_run, task_dir, tmp_path):
    from lmforge.cli import main
    from lmforge.infer.generate import generate

    loaded = load_run(sft_run)
    ids = generate(loaded.model, loaded.tokenizer.encode("3+4="), 3, temperature=0)
    assert len(ids) >= 1
    assert main(["generate", str(sft_run), "max_new_tokens=3", "--", "3+4="]) == 0
    text = tmp_path / "text.txt"
    text.write_text("1+2=3\n4+4=8\n" * 20)
    assert main(["eval", str(sft_run), "device=cpu", f"text={text}"]) == 0
    # A LoRA run as `init.from` of training: the merged model continues as a plain one.
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("1+2=3\n4+4=8\n2+5=7\n" * 200)
    data = tmp_path / "data"
    tok = ["tokenizer.kind=file", f"tokenizer.path={sft_run / 'tokenizer.json'}"]
    assert main(["prepare", str(corpus), f"out={data}", *tok]) == 0
    trained = tmp_path / "continued"
    steps = ["train.max_steps=2", "train.batch_size=2", "train.seq_len=16", "train.peak_tflops=0.1"]
    args = [f"init.from={sft_run}", "eval.every=2", "sample.every=0", "train.tensorboard=false"]
    assert main(["train", str(trained), f"data={data}", *steps, *args]) == 0
    assert load_run(trained).adapter is None and load_run(trained).step == 2
    # A LoRA run as the start of another fine-tuning (its merged model is the new base).
    out = tmp_path / "again"
    assert finetune(_sft(sft_run, task_dir, out), Flags()) == 0
    meta = load_run(out).adapter
    assert meta is not None and meta["base"]["file"] == ADAPTER_FILE


def test_missing_or_changed_base_is_a_clear_error(base, task_dir, tmp_path):
    copy = tmp_path / "base"
    shutil.copytree(base, copy)
    out = tmp_path / "lora"
    assert finetune(_sft(copy, task_dir, out, targets="q_proj,v_proj"), Flags()) == 0
    load_run(out)
    moved = tmp_path / "elsewhere"
    copy.rename(moved)
    with pytest.raises(CheckpointError, match="needs its base run .*missing"):
        load_run(out)
    moved.rename(copy)
    # Retrain the base in place (new weights, new checksums): the adapter no longer fits it.
    torch.manual_seed(1)
    loaded = load_run(copy)
    model = build_model(loaded.model_config, loaded.tokenizer.vocab_size)
    create_run_dir(copy, model, loaded.model_config, loaded.tokenizer, overwrite=True)
    with pytest.raises(CheckpointError, match="base of LoRA run .* changed"):
        load_run(out)


def test_lora_classifier_trains_adapters_and_head(base, task_dir, tmp_path):
    out = tmp_path / "cls"
    cfg = FinetuneConfig(
        init=str(base), out=str(out), task={"name": "classification", "dir": str(task_dir)},
        device="cpu", threads=1, lora={"rank": 4},
        classifier={"epochs": 2, "batch_size": 8, "lr": 1e-2, "patience": 10},
    )  # fmt: skip
    assert finetune(cfg, Flags()) == 0
    report = json.loads((out / "eval" / "classification.json").read_text())
    assert report["n"] == 16
    # The report says whether the model beats a bag of words on the same splits.
    assert {"majority_acc", "bow_acc", "bow_setting"} <= set(report)
    loaded = load_run(out, merge=False)
    assert loaded.adapter is not None and loaded.adapter["targets"] == ["q_proj", "v_proj"]
    original = load_run(base).model.state_dict()
    for key, tensor in original.items():
        assert torch.equal(loaded.model.state_dict()[key], tensor), key
    head_only = cfg.model_copy(
        update={"classifier": cfg.classifier.model_copy(update={"mode": "head"})}
    )
    with pytest.raises(ConfigError, match="classifier.mode=head"):
        finetune(head_only.model_copy(update={"out": str(tmp_path / "h")}), Flags())
