"""`lmforge eval` and `lmforge finetune` end to end on tiny runs trained through the CLI."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
import torch.nn.functional as F

from lmforge.cli import main
from lmforge.data.reader import DataDir
from lmforge.run.rundir import load_run

WORDS = "good great fine bad awful poor the a film movie plot was is very not".split()
TRAIN = ["model.n_layers=2", "model.d_model=32", "train.batch_size=4", "train.max_steps=3"]
TRAIN += ["eval.every=3", "eval.batches=1", "train.peak_tflops=0.1", "device=cpu"]
GPT = ["model.kind=gpt", "model.n_heads=2", "model.max_seq_len=32"]
LSTM = ["model.kind=lstm", "model.d_hidden=32"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A char data dir, a GPT and an LSTM run (3 steps each), and a labelled task."""
    root = tmp_path_factory.mktemp("eval")
    rng = random.Random(0)
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choices(WORDS, k=10)) for _ in range(300)) + "\n")
    assert main(["prepare", str(corpus), f"out={root / 'data'}", "tokenizer.kind=char"]) == 0
    for name, arch in (("gpt", GPT), ("lstm", LSTM)):
        args = ["train", str(root / name), f"data={root / 'data'}", *TRAIN, *arch]
        assert main(args) == 0
    for split, n in (("train", 120), ("dev", 40), ("test", 40)):
        lines = []
        for _ in range(n):
            label = rng.random() < 0.5
            word = rng.choice(["good", "great"] if label else ["bad", "awful"])
            lines.append(f"{'pos' if label else 'neg'} the film was {word}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_intrinsic_matches_a_direct_computation(workdir, capsys):
    run_dir = workdir / "gpt"
    # window = stride = 32: non-overlapping windows, easy to recompute by hand.
    assert main(["eval", str(run_dir), "window=32", "stride=32"]) == 0
    assert "| bits_per_byte |" in capsys.readouterr().out
    saved = json.loads((run_dir / "eval" / "intrinsic.json").read_text())
    assert {"split", "loss", "perplexity", "bits_per_byte", "tokens", "bytes", "checkpoint"} <= set(
        saved
    )
    run = load_run(run_dir)
    data = DataDir.open(workdir / "data")
    tokens = torch.from_numpy(data.tokens("val", 0, data.num_tokens("val")).astype("int64"))
    nats = 0.0
    with torch.no_grad():
        for start in range(0, tokens.numel() - 1, 32):
            chunk = tokens[start : start + 33]
            logits = run.model(chunk[None, :-1])[0]
            nats += float(F.cross_entropy(logits, chunk[1:], reduction="sum"))
    targets = tokens[1:].tolist()
    text_bytes = len(run.tokenizer.decode(t for t in targets if t != run.tokenizer.eot_id).encode())
    assert saved["split"] == "val" and saved["tokens"] == len(targets)
    assert saved["bytes"] == text_bytes
    assert saved["loss"] == pytest.approx(nats / len(targets), rel=1e-4)
    assert saved["perplexity"] == pytest.approx(math.exp(nats / len(targets)), rel=1e-4)
    assert saved["bits_per_byte"] == pytest.approx(nats / math.log(2) / text_bytes, rel=1e-4)


def test_two_runs_side_by_side_and_a_text_file(workdir, capsys):
    text = workdir / "held_out.txt"
    text.write_text("the film was good . the plot was awful .\n")
    assert main(["eval", str(workdir / "gpt"), str(workdir / "lstm"), f"text={text}"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"| intrinsic | {workdir / 'gpt'} | {workdir / 'lstm'} |"
    assert f"| split | text:{text} | text:{text} |" in out
    assert (workdir / "lstm" / "eval" / "intrinsic.json").is_file()


def _task(workdir) -> list[str]:
    return ["task=classification", f"task.dir={workdir}", "task.verbalizers=['bad', 'good']"]


def test_fewshot_task_on_both_architectures(workdir, capsys):
    args = ["eval", str(workdir / "gpt"), str(workdir / "lstm"), *_task(workdir), "shots=2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| method | 2-shot | 2-shot |" in out and "| macro_f1 |" in out


def test_finetune_lstm_then_eval_the_classifier(workdir, capsys):
    out_dir = workdir / "lstm-cls"
    args = ["finetune", str(workdir / "lstm"), *_task(workdir), f"out={out_dir}", "device=cpu"]
    args += ["classifier.lr=1e-2", "classifier.epochs=8", "classifier.patience=8"]
    args += ["classifier.pooling=last"]
    assert main(args) == 0
    report = json.loads((out_dir / "eval" / "classification.json").read_text())
    assert report["method"] == "finetuned" and report["n"] == 40
    assert report["acc"] >= 0.8, report  # the label is one word; even 3 LM steps suffice
    assert (out_dir / "eval" / "classification_confusion.png").is_file()
    assert (out_dir / "classifier" / "head.safetensors").is_file()
    capsys.readouterr()
    assert main(["eval", str(out_dir), *_task(workdir)]) == 0
    assert f"| acc | {report['acc']:.4f} |" in capsys.readouterr().out
    # A second finetune into the same dir needs --overwrite, and fails before training.
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err


def test_bad_task_file_is_a_one_line_error(workdir, tmp_path, capsys):
    (tmp_path / "test.txt").write_text("pos fine\nnolabel\n")
    args = ["eval", str(workdir / "gpt"), "task=classification", f"task.test={tmp_path}/test.txt"]
    assert main(args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "test.txt line 2: expected '<label> <text>'" in errors[0]
    assert main(["eval", str(workdir / "gpt"), "task=nope"]) == 2
    assert "known tasks" in capsys.readouterr().err
    assert main(["finetune", str(workdir / "gpt"), "out=x"]) == 2
    assert "needs task=NAME" in capsys.readouterr().err
    # A window past the model's context is the user's mistake: one line, not a traceback.
    assert main(["eval", str(workdir / "gpt"), "window=64"]) == 2
    assert "window=64 exceeds the model's context of 32 tokens" in capsys.readouterr().err
