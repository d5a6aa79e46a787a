"""The report's figures, drawn with matplotlib (Agg) and returned as PNG bytes.

Curves of a run (loss, lr, throughput), attention maps and the ability panels (exact match with
the p^L prediction beside the continuous metrics, against parameters and compute).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402


def to_png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def curves_png(
    panels: Sequence[tuple[str, dict[str, tuple[list[float], list[float]]]]],
    xlabel: str = "step",
    logy: Sequence[bool] = (),
) -> bytes:
    """Side-by-side panels; each (ylabel, {label: (xs, ys)})."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for i, (ax, (ylabel, series)) in enumerate(zip(axes[0], panels, strict=True)):
        for label, (xs, ys) in series.items():
            ax.plot(xs, ys, label=label, marker="." if len(xs) < 30 else None)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if i < len(logy) and logy[i]:
            ax.set_yscale("log")
        if len(series) > 1:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return to_png(fig)


def attention_png(maps: list[Any], labels: list[str]) -> bytes:
    """A grid of attention maps: one row per layer, one column per head."""
    layers, heads = len(maps), maps[0].shape[0]
    size = max(2.2, 0.16 * len(labels))
    fig, axes = plt.subplots(layers, heads, figsize=(size * heads, size * layers), squeeze=False)
    for layer, probs in enumerate(maps):
        for head in range(heads):
            ax = axes[layer][head]
            ax.imshow(probs[head].numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {layer} head {head}", fontsize=8)
            ticks = range(len(labels))
            ax.set_xticks(ticks, labels, rotation=90, fontsize=6)
            ax.set_yticks(ticks, labels, fontsize=6)
    return to_png(fig)


ABILITY_METRICS = (
    ("exact_match", "exact match"),
    ("token_accuracy", "per-token accuracy"),
    ("edit_distance", "token edit distance"),
    ("neg_log_p", "-log p(correct answer)"),
    ("brier", "Brier score"),
)


def ability_png(points: list[dict[str, Any]], group_key: str | None) -> bytes:
    """Rows: against parameters N, against compute C. Columns: the five metrics. Exact match
    has the p^L prediction (dashed) from per-token accuracy drawn over it."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault(p.get(group_key) if group_key else None, []).append(p)
    fig, axes = plt.subplots(2, len(ABILITY_METRICS), figsize=(17, 6.4), squeeze=False)
    for row, (xkey, xlabel) in enumerate((("N", "parameters N"), ("C", "compute C (FLOPs)"))):
        for col, (key, label) in enumerate(ABILITY_METRICS):
            ax = axes[row][col]
            for group, members in sorted(groups.items(), key=lambda kv: str(kv[0])):
                members = sorted(members, key=lambda p: p[xkey])
                xs = [p[xkey] for p in members]
                name = f"{group_key}={group}" if group_key else "test"
                line = ax.plot(xs, [p["metrics"]["test"][key] for p in members], "o-",
                               label=name)  # fmt: skip
                if key == "exact_match":
                    predicted = [p["metrics"]["test"]["predicted_exact_match"] for p in members]
                    ax.plot(xs, predicted, "--", color=line[0].get_color(),
                            label=f"{name}: p^L")  # fmt: skip
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # crowded labels at small ranges
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if row == 0 and col == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    return to_png(fig)


def loss_vs_compute_png(
    points: list[dict[str, Any]], frontier: tuple[list[float], list[float]] | None
) -> bytes:
    """Final loss against compute, one line per model size, and the fitted frontier."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    sizes: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for p in points:
        sizes.setdefault((p["n_layers"], p["d_model"]), []).append(p)
    for (layers, width), members in sorted(sizes.items()):
        members = sorted(members, key=lambda p: p["C"])
        n = members[0]["N"]
        ax.plot([p["C"] for p in members], [p["loss"] for p in members], "o-",
                label=f"l{layers} d{width} ({n / 1e6:.2g}M)")  # fmt: skip
    if frontier is not None:
        ax.plot(*frontier, "k--", label="fitted frontier (Approach 3)")
    ax.set_xscale("log")
    ax.set_xlabel("compute C (FLOPs, attention included)")
    ax.set_ylabel("final loss")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return to_png(fig)
