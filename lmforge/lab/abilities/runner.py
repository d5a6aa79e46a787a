"""Training a model on a synthetic ability task, as one sweep point.

`plan_ability_points` turns an `[ability]` sweep into points (sizes × training-set sizes ×
budgets × seeds); `train_ability_point` trains one in a worker: AdamW with a linear warm-up,
minibatches drawn from the training set (or the full set), the loss on the task's loss mask.
Every `eval_every` steps a row goes to `history.jsonl`: train and test metrics (metrics.py),
the weight norm, and for induction the in-context score, per-position loss and each head's
prefix-matching score (`lab/inspect.py`). The point ends as an ordinary run dir (the model,
a tokenizer of the task's tokens) with `ability.json` written last: a point without it is not
finished and retrains from the start (these runs are short).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from lmforge.config import deep_merge
from lmforge.lab.abilities.tasks import TaskData, make_task
from lmforge.lab.sweep_config import SweepConfig
from lmforge.lab.sweep_plan import RUNS_DIR, Point, check_unique, format_budget

HISTORY_FILE = "history.jsonl"
RESULT_FILE = "ability.json"


def model_dict(config: SweepConfig, size: list[int], seq_len: int) -> dict[str, Any]:
    """The model keys of a point: the task's context, `ability.model`, then the grid size."""
    assert config.ability is not None
    base = deep_merge({"kind": "gpt"}, config.ability.model)
    if base["kind"] == "gpt":  # the LSTM has no context limit
        base.setdefault("max_seq_len", seq_len)
    sized: dict[str, Any] = {"n_layers": size[0], "d_model": size[1]}
    if base.get("kind", "gpt") == "gpt":
        head_dim = config.grid.head_dim or 32
        sized["n_heads"] = size[2] if len(size) == 3 else max(1, size[1] // head_dim)
    return deep_merge(base, sized)


def _sizes(config: SweepConfig) -> list[list[int]]:
    grid = config.grid
    if grid.sizes is not None:
        return grid.sizes
    return [[max(1, round(w / grid.aspect)), w] for w in grid.widths or []]


def plan_ability_points(config: SweepConfig) -> list[Point]:
    """Every (size, training-set size, budget, seed) point of an `[ability]` sweep."""
    from lmforge.config import validate_config
    from lmforge.lab.sweep_plan import count_params
    from lmforge.models import build_model
    from lmforge.run.config import TrainConfig

    ability, grid = config.ability, config.grid
    assert ability is not None
    seeds = grid.seeds or [0]
    budgets = [("tokens", b) for b in grid.tokens or []] + [("flops", b) for b in grid.flops or []]
    points = []
    for examples in ability.examples or [None]:
        for seed in seeds:
            task = make_task(ability.task, ability.params, seed, examples)
            rows = min(ability.batch_size or task.train.size(0), task.train.size(0))
            tokens_per_step = rows * (task.seq_len - 1)
            for i, size in enumerate(_sizes(config)):
                model = model_dict(config, size, task.seq_len)
                cfg = validate_config(TrainConfig, {"model": model}).model
                import torch

                with torch.device("meta"):
                    net = build_model(cfg, len(task.vocab) + 2)
                total, non_emb, with_head = count_params(net)
                fpt = int(net.flops_per_token(task.seq_len - 1))
                lr = grid.lr[i] if grid.lr is not None else ability.lr
                for kind, value in budgets:
                    target = value if kind == "tokens" else value / fpt
                    steps = max(1, round(target / tokens_per_step))
                    name = f"l{size[0]}_d{size[1]}_{kind[0]}{format_budget(value)}"
                    name = name.replace("_f", "_c")
                    if len(size) == 3:
                        name = name.replace(f"_d{size[1]}_", f"_d{size[1]}_h{size[2]}_")
                    if examples is not None:
                        name += f"_n{examples}"
                    if len(seeds) > 1:
                        name += f"_s{seed}"
                    run_dir = f"{RUNS_DIR}/{name}"
                    job = {
                        "task": ability.task,
                        "params": ability.params,
                        "examples": examples,
                        "seed": seed,
                        "model": model,
                        "steps": steps,
                        "batch_size": ability.batch_size,
                        "lr": lr,
                        "weight_decay": ability.weight_decay,
                        "beta2": ability.beta2,
                        "warmup_steps": ability.warmup_steps,
                        "eval_every": ability.eval_every,
                        "eval_examples": ability.eval_examples,
                        "threads": config.threads,
                        "out": str((Path(config.out) / run_dir).resolve()),
                    }
                    points.append(
                        Point(
                            name=name,
                            run_dir=run_dir,
                            n_layers=size[0],
                            d_model=size[1],
                            n_heads=model.get("n_heads", 0),
                            seed=seed,
                            lr=lr,
                            budget=kind,
                            budget_value=value,
                            steps=steps,
                            tokens_per_step=tokens_per_step,
                            flops_per_token=fpt,
                            N=total,
                            N_non_embedding=non_emb,
                            N_non_embedding_with_head=with_head,
                            train={},
                            ability=job,
                        )  # fmt: skip
                    )
    check_unique(points)
    return points


def finished_ability_result(run_dir: Path) -> dict[str, Any] | None:
    """The result of a finished ability point (its `ability.json`), else None."""
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


# -- training -------------------------------------------------------------------------------------


def train_ability_point(job: dict[str, Any]) -> dict[str, Any]:
    """Train one point; writes its run dir, history and result; returns the result."""
    import torch

    from lmforge.config import validate_config
    from lmforge.models import build_model
    from lmforge.run.config import TrainConfig

    torch.set_num_threads(int(job.get("threads", 1)))
    started = time.perf_counter()
    data = make_task(job["task"], job["params"], job["seed"], job["examples"])
    cfg = validate_config(TrainConfig, {"model": job["model"]}).model
    torch.manual_seed(job["seed"])
    model = build_model(cfg, len(data.vocab) + 2)
    history = train_on_task(model, data, job)
    out = Path(job["out"])
    _write_run_dir(out, model, cfg, data, job, history)
    final = history[-1]
    result = {
        "code": 0,
        "finished": True,
        "step": job["steps"],
        "tokens": job["steps"] * _rows_per_step(job, data) * (data.seq_len - 1),
        "seconds": time.perf_counter() - started,
        "val_loss": final["test_loss"],
        "train_loss": final["train_loss"],
        "metrics": {k: v for k, v in final.items() if k not in ("per_position_loss",)},
        "history_file": f"{RUNS_DIR}/{out.name}/{HISTORY_FILE}",
    }
    tmp = out / f".{RESULT_FILE}.tmp"
    tmp.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out / RESULT_FILE)  # last: its presence means the point is finished
    return result


def _rows_per_step(job: dict[str, Any], data: TaskData) -> int:
    """Examples per step: `batch_size`, or the whole training set (0, or a larger batch)."""
    n = data.train.size(0)
    return min(int(job["batch_size"]) or n, n)


def train_on_task(model: Any, data: TaskData, job: dict[str, Any]) -> list[dict[str, Any]]:
    """The training loop; returns the evaluation rows (also the last step's)."""
    import torch
    import torch.nn.functional as F

    steps, batch = int(job["steps"]), _rows_per_step(job, data)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": job["weight_decay"]},
         {"params": other, "weight_decay": 0.0}],
        lr=job["lr"], betas=(0.9, job["beta2"]),
    )  # fmt: skip
    generator = torch.Generator().manual_seed(job["seed"] + 1)
    # Only the last `keep` positions can carry loss (modular: the one answer token): the model
    # computes its last MLP and head there only (`logits_to_keep`), the same gradients for less.
    scored = data.train_loss_mask.any(dim=0).nonzero()
    first = int(scored[0]) if len(scored) else 0  # 0: every position may carry loss, keep all
    keep = data.train_loss_mask.size(1) - first if first > 0 else 0
    history = []
    for step in range(1, steps + 1):
        warm = job["warmup_steps"]
        for group in optimizer.param_groups:
            group["lr"] = job["lr"] * min(1.0, step / warm) if warm else job["lr"]
        if batch >= data.train.size(0):
            rows, mask = data.train, data.train_loss_mask
        else:
            index = torch.randint(0, data.train.size(0), (batch,), generator=generator)
            rows, mask = data.train[index], data.train_loss_mask[index]
        model.train()
        logits = model(rows[:, :-1], logits_to_keep=keep)
        targets = rows[:, -keep:] if keep else rows[:, 1:]
        mask = mask[:, -keep:] if keep else mask
        losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        loss = (losses * mask).sum() / mask.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % job["eval_every"] == 0 or step == steps:
            row = evaluate_task(model, data, int(job["eval_examples"]))
            row["step"] = step
            row["lr"] = optimizer.param_groups[0]["lr"]
            history.append(row)
            flat = {k: v for k, v in row.items() if not isinstance(v, list | dict)}
            for split in ("train", "test"):  # the split metrics too (accuracy as it goes)
                flat.update({f"{split}_{k}": v for k, v in row.get(split, {}).items()
                             if isinstance(v, int | float)})  # fmt: skip
            print(json.dumps(flat), flush=True)
    return history


def evaluate_task(model: Any, data: TaskData, limit: int) -> dict[str, Any]:
    """Loss and the ability metrics on both splits (first `limit` examples), weight norm, and
    for induction the in-context score, per-position loss and prefix-matching scores."""
    import torch

    from lmforge.lab.abilities.metrics import (
        answer_metrics,
        greedy_answers,
        in_context_score,
        per_position_loss,
    )

    model.eval()
    row: dict[str, Any] = {}
    with torch.no_grad():
        for split, rows, loss_mask, answer, early in (
            ("train", data.train, data.train_loss_mask, data.train_answer_mask,
             data.train_early_mask),
            ("test", data.test, data.test_loss_mask, data.test_answer_mask, data.test_early_mask),
        ):  # fmt: skip
            rows, loss_mask, answer = rows[:limit], loss_mask[:limit], answer[:limit]
            logits = model(rows[:, :-1])
            targets = rows[:, 1:]
            losses = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), targets, reduction="none"
            )
            row[f"{split}_loss"] = float((losses * loss_mask).sum() / loss_mask.sum())
            decoded = None
            if data.answer_start is not None:
                decoded = greedy_answers(model, rows, data.answer_start)
            row[split] = answer_metrics(logits, targets, answer, decoded)
            if early is not None and split == "test":  # induction
                early = early[:limit]
                row.update(in_context_score(logits, targets, answer, early))
                row["per_position_loss"] = per_position_loss(logits, targets)
                row["prefix_matching"] = _prefix_matching(model, rows, answer, early)
        row["weight_norm"] = math.sqrt(sum(float((p**2).sum()) for p in model.parameters()))
    return row


def _prefix_matching(model: Any, rows: Any, answer: Any, early: Any) -> list[list[float]] | None:
    from lmforge.lab.abilities.tasks import copy_starts, repeat_starts, segment_lengths
    from lmforge.lab.inspect import prefix_matching_scores
    from lmforge.models.gpt import GPT

    if not isinstance(model, GPT):
        return None  # the LSTM baseline has no attention heads
    answer, early = answer[:128], early[:128]
    lengths, copies, repeats = segment_lengths(answer), copy_starts(early), repeat_starts(answer)
    return prefix_matching_scores(model, rows[:128], lengths, copies, repeats)


def task_tokenizer(vocab: list[str]) -> Any:
    """A tokenizer of the task's tokens (ids in `vocab` order, then <|endoftext|>, <unk>).

    Single-character tokens get a char-level tokenizer (so `lmforge generate RUN -- "12+34="`
    works); others a whitespace-split word-level one ("3 + 5 =").
    """
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers

    from lmforge.data.tokenizer import EOT, UNK, Tokenizer

    ids = {token: i for i, token in enumerate(vocab)}
    ids[EOT], ids[UNK] = len(vocab), len(vocab) + 1
    if all(len(t) == 1 for t in vocab):
        inner = tokenizers.Tokenizer(models.BPE(ids, [], unk_token=UNK))
        inner.decoder = decoders.Fuse()
    else:
        inner = tokenizers.Tokenizer(models.WordLevel(ids, unk_token=UNK))
        inner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    inner.add_special_tokens([EOT])
    return Tokenizer(inner)


def _write_run_dir(
    out: Path, model: Any, cfg: Any, data: TaskData, job: dict[str, Any], history: list
) -> None:
    from lmforge.run.config import TrainConfig
    from lmforge.run.rundir import create_run_dir

    if out.exists() and not (out / "config.toml").is_file():
        import shutil

        shutil.rmtree(out)  # a point killed before its run dir existed
    config = TrainConfig(model=cfg, out=str(out), seed=job["seed"])
    info = {"ability": {k: v for k, v in job.items() if k != "out"}}
    create_run_dir(out, model, cfg, task_tokenizer(data.vocab), config, job["steps"],
                   overwrite=True, info=info)  # fmt: skip
    with open(out / HISTORY_FILE, "w", encoding="utf-8") as f:
        for row in history:
            f.write(json.dumps(row) + "\n")
