"""copy_reverse: train, dev and test are disjoint by construction, and seeded."""

from __future__ import annotations

from lmforge.eval.tasks.copy_reverse import CopyReverseTask


def test_splits_are_disjoint_and_each_prompt_belongs_to_its_split():
    task = CopyReverseTask()
    prompts = {s: {e.prompt for e in task.examples(s)} for s in ("train", "dev", "test")}
    assert not prompts["train"] & prompts["test"]
    assert not prompts["train"] & prompts["dev"]
    assert not prompts["dev"] & prompts["test"]
    for split, found in prompts.items():
        for prompt in list(found)[:200]:
            op, text = prompt[:-1].split(" ")
            assert task.split_of(op, text) == split
    # Held-out prompts still cover both operations and the lengths with room to hold out
    # (length 1 has only 12 (operation, string) pairs in all).
    test = task.examples("test")
    assert {e.prompt.split(" ")[0] for e in test} == {"copy", "reverse"}
    assert {len(e.response) for e in test} >= set(range(2, 6))


def test_splits_are_seeded():
    a, b = CopyReverseTask(seed=0), CopyReverseTask(seed=1)
    assert a.examples("test") == CopyReverseTask(seed=0).examples("test")
    assert [e.prompt for e in a.examples("test")] != [e.prompt for e in b.examples("test")]


def test_eval_on_dev_is_reported_apart_from_test(gpt_run):
    import json

    from lmforge.config import build_config
    from lmforge.eval.config import EvalConfig
    from lmforge.eval.generation import evaluate_generation
    from lmforge.run.rundir import load_run

    cfg = build_config(EvalConfig, None, ["task=copy_reverse", "task.split=dev"])
    task = CopyReverseTask()
    metrics = evaluate_generation(task, load_run(gpt_run), cfg.task, cfg.decode, limit=4)
    assert metrics["split"] == "dev" and metrics["examples"] == 4
    assert not (gpt_run / "eval" / "copy_reverse.json").exists()  # the test report is untouched
    rows = (gpt_run / "eval" / "copy_reverse.dev.predictions.jsonl").read_text().splitlines()
    dev_prompts = {e.prompt for e in task.examples("dev")[:4]}
    assert {json.loads(r)["prompt"] for r in rows} == dev_prompts
