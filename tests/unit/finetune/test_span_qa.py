"""The span-QA head: windows and labels that point at the answer's characters, decoding that reads
the best span back from the context, training through the Trainer (GPT and LSTM, LoRA too) into
a run dir with its head and report; `lmforge eval RUN task=squad` scores that run with its span
head (the fine-tuning's own test score, exactly) and a language-model run generatively."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from lmforge.cli import main
from lmforge.data.tokenizer import EOT, build_char
from lmforge.errors import ConfigError
from lmforge.eval.span_qa import QAExample, make_features, predict_spans, score_predictions
from lmforge.finetune import finetune
from lmforge.finetune.config import FinetuneConfig
from lmforge.finetune.span_qa import SpanObjective
from lmforge.models import GPTConfig, LSTMConfig, build_model
from lmforge.models.heads import SPAN_DIR, SpanQAHead, load_span_head
from lmforge.run.rundir import create_run_dir, load_run
from lmforge.verb import Flags

KEYS = ["alpha", "bravo", "delta", "gamma", "omega", "sigma"]
VALUES = ["red", "blue", "green", "pink", "gold", "grey"]
CHARS = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,?:\n"


def _article(rng: random.Random, n: int, prefix: str) -> dict:
    """SQuAD-format paragraphs: 'key is value.' facts, questions about one key."""
    paragraphs = []
    for p in range(n):
        keys = rng.sample(KEYS, 3)
        values = [rng.choice(VALUES) for _ in keys]
        context = " ".join(f"{k} is {v}." for k, v in zip(keys, values, strict=True))
        j = rng.randrange(3)
        start = context.index(f"{keys[j]} is ") + len(f"{keys[j]} is ")
        qa = {"id": f"{prefix}{p}", "question": f"What is {keys[j]}?"}
        qa["answers"] = [{"text": values[j], "answer_start": start}]
        paragraphs.append({"context": context, "qas": [qa]})
    return {"title": prefix, "paragraphs": paragraphs}


@pytest.fixture(scope="module")
def squad_files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("squad")
    rng = random.Random(0)
    files = {}
    for split, n in (("train", 200), ("dev", 30), ("test", 30)):
        path = root / f"{split}.json"
        path.write_text(json.dumps({"data": [_article(rng, n, split)]}))
        files[split] = str(path)
    return files


def _examples(files: dict[str, str], split: str) -> list[QAExample]:
    data = json.loads(Path(files[split]).read_text())["data"]
    out = []
    for p in data[0]["paragraphs"]:
        qa = p["qas"][0]
        a = qa["answers"][0]
        out.append(
            QAExample(qa["id"], qa["question"], p["context"], (a["text"],), a["answer_start"])
        )
    return out


def _tokenizer():
    return build_char([CHARS], [EOT])


def test_window_labels_point_at_the_answer_characters(squad_files):
    examples = _examples(squad_files, "train")[:40]
    tok = _tokenizer()
    # 48 tokens: the question takes ~20, so contexts (~40 chars) need several overlapping windows.
    features = make_features(examples, tok, 48, stride=8)
    assert len(features) > len(examples)
    found = set()
    for f in features:
        assert len(f.ids) <= 48 and len(f.offsets) == len(f.ids) - f.context_start
        if f.start:
            a, b = f.start - f.context_start, f.end - f.context_start
            text = examples[f.example].context[f.offsets[a][0] : f.offsets[b][1]]
            assert text == examples[f.example].answers[0]
            found.add(f.example)
    assert found == set(range(len(examples)))  # every answer lies whole in some window
    # Consecutive windows of one example overlap by the stride.
    first, second = [f for f in features if f.example == 0][:2]
    assert first.offsets[-8:] == second.offsets[:8]


class _Oracle(torch.nn.Module):
    """Fixed logits (a decoding test): high at the labelled start/end of each window."""

    def __init__(self, features):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.labels = {tuple(f.ids): (f.start, f.end) for f in features}

    def forward(self, tokens):
        start = torch.zeros(tokens.shape)
        end = torch.zeros(tokens.shape)
        for row, ids in enumerate(tokens.tolist()):
            key = next(k for k in self.labels if list(k) == ids[: len(k)])
            s, e = self.labels[key]
            if s:
                start[row, s], end[row, e] = 5.0, 5.0
        return start, end


def test_decoding_reads_the_best_span_across_windows(squad_files):
    examples = _examples(squad_files, "dev")
    features = make_features(examples, _tokenizer(), 48, stride=8)
    preds = predict_spans(_Oracle(features), examples, features, max_answer_len=30)
    assert preds == [e.answers[0] for e in examples]
    scores = score_predictions(preds, examples)
    assert scores["exact_match"] == 100.0 and scores["f1"] == 100.0
    assert {"baseline_overlap_f1", "baseline_first_sentence_exact_match"} <= set(scores)
    # A span longer than max_answer_len is never chosen.
    short = predict_spans(_Oracle(features), examples, features, max_answer_len=2)
    assert all(len(p) <= 2 for p in short)


def _run(tmp: Path, kind: str) -> Path:
    torch.manual_seed(0)
    tok = _tokenizer()
    cfg = (
        GPTConfig(n_layers=2, n_heads=4, d_model=64, max_seq_len=96)
        if kind == "gpt"
        else LSTMConfig(n_layers=1, d_model=32, d_hidden=96)
    )
    return create_run_dir(tmp / kind, build_model(cfg, tok.vocab_size), cfg, tok)


def _span_config(init: Path, out: Path, files: dict, steps: int, **extra) -> FinetuneConfig:
    sft = {"max_steps": steps, "batch_size": 32, "eval_every": steps, "lr": 3e-3, "max_len": 96}
    return FinetuneConfig(
        init=str(init), out=str(out), task={"name": "squad", **files}, device="cpu", threads=1,
        sft=sft, qa={"head": "span", "max_answer_len": 8}, **extra,
    )  # fmt: skip


@pytest.mark.parametrize(("kind", "steps"), [("gpt", 150), ("lstm", 20)])
def test_span_finetuning_learns_and_publishes(squad_files, tmp_path, kind, steps):
    init = _run(tmp_path, kind)
    out = tmp_path / "qa"
    assert finetune(_span_config(init, out, squad_files, steps), Flags()) == 0
    report = json.loads((out / "eval" / "squad_span.json").read_text())
    assert report["examples"] == 30 and {"baseline_overlap_f1", "dev_f1"} <= set(report)
    if kind == "gpt":
        # The facts task: a reader that finds the asked key beats guessing one of three values
        # (the LSTM, which must carry the key through the facts, learns it too, more slowly).
        assert report["f1"] > max(50.0, report["baseline_first_sentence_f1"] + 20), report
    loaded = load_run(out)
    model, meta = load_span_head(loaded.model, out / SPAN_DIR)
    assert isinstance(model, SpanQAHead) and meta["max_answer_len"] == 8
    # `lmforge eval` on the published run decodes the same test split with the same code and
    # windows: exactly the fine-tuning's own EM/F1, reported as span scoring.
    args = ["eval", str(out), "task=squad", f"task.test={squad_files['test']}", "threads=1"]
    assert main([*args, "device=cpu"]) == 0
    scored = json.loads((out / "eval" / "squad.json").read_text())
    assert scored["scoring"] == "span" and scored["examples"] == report["examples"]
    for key in ("exact_match", "f1", "baseline_overlap_f1", "baseline_first_sentence_f1"):
        assert scored[key] == report[key], key
    lines = (out / "eval" / "squad.predictions.jsonl").read_text().splitlines()
    assert len(lines) == 30 and "span" in json.loads(lines[0])


def test_span_lora_and_bad_task(squad_files, tmp_path, capsys):
    init = _run(tmp_path, "gpt")
    out = tmp_path / "qa_lora"
    cfg = _span_config(init, out, squad_files, 10, lora={"rank": 4, "targets": "all-linear"})
    assert finetune(cfg, Flags()) == 0
    assert load_run(out, merge=False).adapter is not None
    # A generative-only key on a span run is ignored, with a warning that names it.
    args = ["eval", str(out), "task=squad", f"task.test={squad_files['test']}", "limit=5"]
    capsys.readouterr()
    assert main([*args, "decode.beam_size=2", "device=cpu", "threads=1"]) == 0
    assert "decode.beam_size (generative scoring only) is ignored" in capsys.readouterr().err
    scored = json.loads((out / "eval" / "squad.json").read_text())
    assert scored["scoring"] == "span" and scored["examples"] == 5 and "f1" in scored
    bad = cfg.model_copy(update={"task": cfg.task.model_copy(update={"name": "copy_reverse"})})
    with pytest.raises(ConfigError, match="qa.head=span needs a SQuAD-format task"):
        finetune(bad.model_copy(update={"out": str(tmp_path / "bad")}), Flags())


def test_eval_scores_a_language_model_run_generatively(squad_files, tmp_path):
    """A run without a span head still writes its answers (greedy, here an untrained GPT)."""
    init = _run(tmp_path, "gpt")
    args = ["eval", str(init), "task=squad", f"task.test={squad_files['test']}", "limit=4"]
    assert main([*args, "decode.beam_size=1", "decode.max_new_tokens=3", "device=cpu"]) == 0
    scored = json.loads((init / "eval" / "squad.json").read_text())
    assert scored["scoring"] == "generative" and scored["examples"] == 4
    assert "f1_greedy" in scored and "f1" not in scored


def test_loss_ignores_pads():
    from lmforge.finetune.span_qa import SpanBatch

    obj = SpanObjective(8)
    start = torch.zeros(1, 6)
    end = torch.zeros(1, 6)
    batch = SpanBatch(
        torch.zeros(1, 6, dtype=torch.long), torch.tensor([3]), torch.tensor([1]), torch.tensor([2])
    )
    # Uniform over the 3 real tokens only: loss log(3), not log(6).
    assert torch.isclose(obj.loss((start, end), batch), torch.log(torch.tensor(3.0)))
