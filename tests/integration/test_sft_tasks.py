"""Multi30k translation (both directions) and SQuAD QA end to end on a tiny budget: SFT through
`lmforge finetune`, then the test split decoded (greedy + beam) and scored into eval reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmforge.data.tokenizer import build_char
from lmforge.eval.config import EvalConfig, TaskSection
from lmforge.eval.run import evaluate
from lmforge.eval.tasks import get_task
from lmforge.finetune import finetune
from lmforge.finetune.config import FinetuneConfig
from lmforge.models import GPTConfig, LSTMConfig, build_model
from lmforge.run.rundir import create_run_dir
from lmforge.verb import Flags


def _run_for(task_name: str, kind: str, path: Path) -> Path:
    """A random-init run whose char vocabulary covers a sample of the task's text."""
    task = get_task(task_name)
    sample = task.examples("train", TaskSection(name=task_name))[:300]
    tokenizer = build_char([e.prompt + e.response for e in sample], ["<|endoftext|>"])
    torch.manual_seed(0)
    if kind == "gpt":
        cfg = GPTConfig(n_layers=1, n_heads=2, d_model=32, max_seq_len=128)
    else:
        cfg = LSTMConfig(n_layers=1, d_model=32, d_hidden=32)
    return create_run_dir(path, build_model(cfg, tokenizer.vocab_size), cfg, tokenizer)


def _finetune(task_name: str, init: Path, out: Path, **sft) -> dict:  # noqa: ANN003
    cfg = FinetuneConfig(
        init=str(init),
        out=str(out),
        task=task_name,
        device="cpu",
        sft={
            "max_steps": 3,
            "batch_size": 4,
            "limit_train": 16,
            "eval_batches": 1,
            "eval_limit": 3,
            **sft,
        },
        decode={"beam_size": 2, "max_new_tokens": 6, "batch_size": 2},
    )
    assert finetune(cfg, Flags()) == 0
    report = json.loads((out / "eval" / f"{task_name}.json").read_text())
    rows = (out / "eval" / f"{task_name}.predictions.jsonl").read_text().splitlines()
    assert report["examples"] == 3 and len(rows) == 3
    return report


@pytest.mark.parametrize(
    ("task_name", "kind"), [("multi30k_en_de", "gpt"), ("multi30k_de_en", "lstm")]
)
def test_multi30k_pipeline(tmp_path: Path, shared_data: Path, task_name: str, kind: str) -> None:
    init = _run_for(task_name, kind, tmp_path / "init")
    report = _finetune(task_name, init, tmp_path / "mt")
    # The report scores exactly the test examples it wrote out, greedy and beam alike: rescore
    # the written answers with sacrebleu itself against the task's own test references.
    import sacrebleu

    rows = _predictions(tmp_path / "mt", task_name)
    test = get_task(task_name).examples("test", TaskSection(name=task_name))[:3]
    assert [r["references"] for r in rows] == [list(e.references) for e in test]
    refs = [[r["references"][0] for r in rows]]
    for mode in ("greedy", "beam"):
        hyps = [r[mode] for r in rows]
        assert report[f"bleu_{mode}"] == sacrebleu.corpus_bleu(hyps, refs).score
        assert report[f"chrf_{mode}"] == sacrebleu.corpus_chrf(hyps, refs).score
    assert report["beam_size"] == 2
    # Any run can be scored, fine-tuned or not.
    scored = evaluate(
        EvalConfig(
            runs=[str(init)], task=task_name, limit=2, decode={"beam_size": 1, "max_new_tokens": 4}
        )
    )[str(init)]
    assert scored["examples"] == 2 and "bleu_beam" not in scored


def test_squad_pipeline(tmp_path: Path, shared_data: Path) -> None:
    init = _run_for("squad", "gpt", tmp_path / "init")
    report = _finetune("squad", init, tmp_path / "qa")
    # Rescore the written answers with the official SQuAD v1.1 normalisation, max over references.
    rows = _predictions(tmp_path / "qa", "squad")
    for mode in ("greedy", "beam"):
        em = [max(_norm(r[mode]) == _norm(ref) for ref in r["references"]) for r in rows]
        f1 = [max(_token_f1(r[mode], ref) for ref in r["references"]) for r in rows]
        assert report[f"exact_match_{mode}"] == pytest.approx(100 * sum(em) / len(rows))
        assert report[f"f1_{mode}"] == pytest.approx(100 * sum(f1) / len(rows))
    # The model-free baselines are reported beside the model, on the same questions.
    assert {"baseline_first_sentence_f1", "baseline_overlap_f1"} <= set(report)
    assert "baseline_overlap_exact_match" in report


def _predictions(run: Path, task: str) -> list[dict]:
    lines = (run / "eval" / f"{task}.predictions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _norm(text: str) -> str:
    """SQuAD v1.1's normalize_answer: lower case, no punctuation, articles or extra spaces."""
    import re
    import string

    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def _token_f1(prediction: str, reference: str) -> float:
    from collections import Counter

    pred, ref = _norm(prediction).split(), _norm(reference).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def test_trainer_counts_the_tokens_it_computed(tmp_path: Path) -> None:
    """SFT batches are as wide as their longest row, not the longest example: the run's token
    counter (and so tokens/s and MFU) must add up the batches actually fed, pads included."""
    from lmforge.eval.tasks.sft_jsonl import TASK as SFT_JSONL
    from lmforge.finetune.sft import SFTBatches, encode_split
    from lmforge.run.rundir import load_run

    rows = [{"prompt": "x" * k, "response": "y"} for k in range(1, 61)]
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tokenizer = build_char(["xy"], ["<|endoftext|>"])
    torch.manual_seed(0)
    model_cfg = GPTConfig(n_layers=1, n_heads=2, d_model=32, max_seq_len=128)
    init = create_run_dir(
        tmp_path / "init", build_model(model_cfg, tokenizer.vocab_size), model_cfg, tokenizer
    )
    task = {"name": "sft_jsonl", "train": str(tmp_path / "train.jsonl")}
    task["test"] = str(tmp_path / "test.jsonl")
    cfg = FinetuneConfig(
        init=str(init),
        out=str(tmp_path / "sft"),
        task=task,
        device="cpu",
        sft={"max_steps": 5, "batch_size": 4, "eval_batches": 1, "evaluate": False},
    )
    assert finetune(cfg, Flags()) == 0

    train = encode_split(SFT_JSONL, "train", load_run(init), cfg, None)
    replay = SFTBatches(train, 4, cfg.seed, True, tokenizer.eot_id)
    expected = sum(x.numel() for _ in range(5) for x, _ in replay.next_batches())
    state_file = tmp_path / "sft" / "checkpoints" / "step_000005" / "state.json"
    state = json.loads(state_file.read_text())
    assert state["tokens"] == expected
    assert expected < 5 * 4 * replay.seq_len  # the nominal count would be larger
