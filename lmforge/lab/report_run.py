"""The parts of a single run's report: curves, samples, evals, config, machine, inside the model.

Reads only the run dir's files (metrics.jsonl, samples.txt, eval/*.json, config.toml,
run_info.json, an ability run's history.jsonl) and, for a GPT, loads the checkpoint to draw
attention maps per layer/head and a logit lens for a prompt (`lab/inspect.py`). A run without
samples or evals gets a sentence that says so, not an empty section.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmforge.lab.report_blocks import Image, Part, Pre, Table, read_jsonl
from lmforge.lab.report_config import ReportConfig
from lmforge.lab.report_plots import attention_png, curves_png
from lmforge.run import rundir

_SAMPLES_SHOWN = 3


def run_parts(run_dir: Path, config: ReportConfig) -> list[Part]:
    rows = read_jsonl(run_dir / rundir.METRICS_FILE)
    parts = [_summary(run_dir, rows)]
    history = read_jsonl(run_dir / "history.jsonl")
    if history:
        parts.append(_ability_history(history))
    else:
        parts += [_curves(rows), _throughput(rows)]
    parts += [_samples(run_dir), _evals(run_dir), _inside(run_dir, config)]
    parts += [_config(run_dir), _machine(run_dir)]
    return parts


def _summary(run_dir: Path, rows: list[dict[str, Any]]) -> Part:
    train = [r for r in rows if "loss" in r and "skipped" not in r]
    val = [r for r in rows if "val_loss" in r]
    table = [["run dir", str(run_dir)]]
    if train:
        last = train[-1]
        table += [["steps", last["step"]], ["tokens", last.get("tokens")],
                  ["final train loss", last["loss"]],
                  ["training time (s)", last.get("elapsed_s")]]  # fmt: skip
    if val:
        best = min(val, key=lambda r: r["val_loss"])
        table += [["final val loss", val[-1]["val_loss"]],
                  ["best val loss", f"{best['val_loss']:.4f} (step {best['step']})"]]  # fmt: skip
        if "val_bpb" in val[-1]:
            table.append(["final val bits per byte", val[-1]["val_bpb"]])
    info = _json(run_dir / rundir.RUN_INFO_FILE)
    if info.get("num_params"):
        table.append(["parameters", f"{info['num_params']:,}"])
    blocks: list[Any] = [Table(["", "value"], table)]
    if not train and not (run_dir / "history.jsonl").is_file():
        blocks.append("This run has no training metrics (metrics.jsonl is missing or empty).")
    return Part("Summary", blocks)


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    picked = [r for r in rows if key in r and r[key] is not None]
    return [r["step"] for r in picked], [r[key] for r in picked]


def _curves(rows: list[dict[str, Any]]) -> Part:
    losses = {"train": _series(rows, "loss"), "val": _series(rows, "val_loss")}
    losses = {k: v for k, v in losses.items() if v[0]}
    if not losses:
        return Part("Loss and learning rate", ["No loss was logged."])
    lr = {"lr": _series(rows, "lr")}
    png = curves_png([("loss (nats/token)", losses), ("learning rate", lr)])
    return Part("Loss and learning rate", [Image("loss_lr.png", png, "loss and learning rate")])


def _throughput(rows: list[dict[str, Any]]) -> Part:
    speed = _series(rows, "tokens_per_s")
    if not speed[0]:
        return Part("Throughput", ["No throughput was logged."])
    panels = [("tokens/s", {"tokens/s": speed})]
    mfu = _series(rows, "mfu")
    if mfu[0]:
        panels.append(("MFU", {"MFU": (mfu[0], [100 * m for m in mfu[1]])}))
    values = sorted(speed[1])
    text = f"Median {values[len(values) // 2]:,.0f} tokens/s"
    if mfu[0]:
        text += f", median MFU {100 * sorted(mfu[1])[len(mfu[1]) // 2]:.2f}%"
    return Part("Throughput", [text + ".", Image("throughput.png", curves_png(panels), text)])


def _ability_history(history: list[dict[str, Any]]) -> Part:
    steps = [r["step"] for r in history]
    blocks: list[Any] = []
    panels = [
        ("loss", {"train": (steps, [r["train_loss"] for r in history]),
                  "test": (steps, [r["test_loss"] for r in history])}),
        ("exact match", {"train": (steps, [r["train"]["exact_match"] for r in history]),
                         "test": (steps, [r["test"]["exact_match"] for r in history]),
                         "test p^L": (steps, [r["test"]["predicted_exact_match"]
                                              for r in history])}),
        ("weight norm", {"L2": (steps, [r["weight_norm"] for r in history])}),
    ]  # fmt: skip
    blocks.append(Image("ability_training.png", curves_png(panels), "ability training curves"))
    if "icl_score" in history[-1]:
        panels = [("in-context score (nats)", {"ICL": (steps, [r["icl_score"] for r in history])})]
        if history[-1].get("prefix_matching"):
            heads = {
                f"L{i}H{j}": (steps, [r["prefix_matching"][i][j] for r in history])
                for i, layer in enumerate(history[-1]["prefix_matching"])
                for j in range(len(layer))
            }
            panels.append(("prefix-matching score", heads))
        blocks.append(
            "In-context score (loss early in the context minus late in it) beside each "
            "head's prefix-matching score (Olsson et al. 2022), across training."
        )
        blocks.append(Image("induction.png", curves_png(panels), "induction across training"))
        positions = history[-1]["per_position_loss"]
        png = curves_png([("loss", {"test": (list(range(1, len(positions) + 1)), positions)})],
                         xlabel="token position")  # fmt: skip
        blocks.append(Image("per_position.png", png, "loss per token position"))
    final = history[-1]
    table = [[split, *(final[split][k] for k in _METRIC_KEYS)] for split in ("train", "test")]
    blocks.append(Table(["split", *_METRIC_KEYS], table))
    return Part("Task training", blocks)


_METRIC_KEYS = ["exact_match", "predicted_exact_match", "token_accuracy", "edit_distance",
                "neg_log_p", "brier"]  # fmt: skip


def _samples(run_dir: Path) -> Part:
    path = run_dir / rundir.SAMPLES_FILE
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    chunks = [c for c in text.split("=== step ") if c.strip()]
    if not chunks:
        text = "This run wrote no samples (sample.every was 0, or it ended before the first)."
        return Part("Samples", [f"{text} Try: lmforge generate {run_dir}"])
    shown = chunks[-_SAMPLES_SHOWN:]
    return Part("Samples", [f"The last {len(shown)} of {len(chunks)} samples."]
                + [Pre("step " + c.strip()) for c in shown])  # fmt: skip


def _evals(run_dir: Path) -> Part:
    files = sorted((run_dir / "eval").glob("*.json"))
    if not files:
        return Part("Evaluations", ["No evaluations yet: nothing in eval/. Run: lmforge eval "
                                    f"{run_dir} [task=NAME]"])  # fmt: skip
    blocks: list[Any] = []
    for path in files:
        data = _json(path)
        flat = {k: v for k, v in _flatten(data).items() if not isinstance(v, list)}
        blocks.append(f"eval/{path.name}")
        blocks.append(Table(["metric", "value"], [[k, v] for k, v in list(flat.items())[:40]]))
    return Part("Evaluations", blocks)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix.rstrip("."): data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}{key}."))
    return out


def _config(run_dir: Path) -> Part:
    text = (run_dir / rundir.CONFIG_FILE).read_text(encoding="utf-8")
    return Part("Config", [Pre(text)])


def _machine(run_dir: Path) -> Part:
    info = _json(run_dir / rundir.RUN_INFO_FILE)
    if not info:
        return Part("Machine", ["No run_info.json in this run dir."])
    return Part("Machine", [Pre(json.dumps(info, indent=1))])


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


# -- inside the model -----------------------------------------------------------------------------


def _inside(run_dir: Path, config: ReportConfig) -> Part:
    """Attention maps per layer/head and a logit lens for a prompt (GPT runs)."""
    import torch

    from lmforge.lab.inspect import attention_maps, logit_lens
    from lmforge.models.gpt import GPT
    from lmforge.run.rundir import load_run

    title = "Inside the model"
    if not any((run_dir / rundir.CHECKPOINTS_DIR).glob("step_*")):
        return Part(title, ["No checkpoint to look inside yet."])
    run = load_run(run_dir, config.checkpoint)
    if not isinstance(run.model, GPT):
        return Part(title, [f"A {run.model_config.kind} model has no attention maps to draw."])
    prompt = _prompt(run, config)
    ids = run.tokenizer.encode(prompt)[: min(config.prompt_tokens, run.model.max_context)]
    if len(ids) < 2:
        return Part(title, [f"The prompt {prompt!r} has fewer than 2 tokens; pass prompt=TEXT."])
    tokens = torch.tensor(ids)
    labels = [run.tokenizer.decode([i]) or "·" for i in ids]
    maps = attention_maps(run.model, tokens)
    blocks: list[Any] = [
        f"Prompt ({len(ids)} tokens, checkpoint {run.checkpoint_dir.name}): {prompt[:200]!r}. "
        "Rows are queries, columns keys; each row sums to 1.",
        Image("attention.png", attention_png(maps, labels), "attention maps per layer and head"),
        "Logit lens: the top guess for the next token read off the residual stream after each "
        "block (the final norm and output head applied early), with its probability.",
    ]
    lens = logit_lens(run.model, tokens, top_k=1)
    table = []
    for layer in lens:
        guesses = [f"{run.tokenizer.decode([ids_[0]])!r} {probs[0]:.2f}"
                   for ids_, probs in zip(layer["ids"], layer["probs"], strict=True)]  # fmt: skip
        table.append([layer["layer"], *guesses])
    blocks.append(Table(["after", *[repr(t) for t in labels]], table))
    return Part(title, blocks)


def _prompt(run: Any, config: ReportConfig) -> str:
    if config.prompt:
        return config.prompt
    if run.config.sample.prompt:
        return run.config.sample.prompt
    info = _json(run.run_dir / rundir.RUN_INFO_FILE)
    if "ability" in info:  # a task run: one of its own examples
        from lmforge.lab.abilities.tasks import make_task

        job = info["ability"]
        data = make_task(job["task"], job["params"], job["seed"], job["examples"])
        words = [data.vocab[i] for i in data.test[0].tolist()]
        return (" " if any(len(w) > 1 for w in data.vocab) else "").join(words)
    return _validation_text(run)


def _validation_text(run: Any) -> str:
    """The start of the run's validation split, or a fixed sentence without a data dir."""
    try:
        from lmforge.data.reader import DataDir

        data = DataDir.open(run.config.data)
        return data.decode("val", 0, min(64, data.num_tokens("val")))
    except Exception:  # noqa: BLE001 - the data dir may be gone; the report still works
        return "The quick brown fox jumps over the lazy dog."
