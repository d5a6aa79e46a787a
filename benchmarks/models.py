"""Forward+backward speed of the GPT and the LSTM, as achieved FLOP/s and as a fraction of this
machine's matmul FLOP/s measured in the same run (fp32 and bf16 autocast).

GPT: n_layers=6, n_heads=6, d_model=384, seq 256, batch 16; LSTM: 2 layers with d_hidden chosen
for a similar parameter count. FLOPs per token: the models' own `flops_per_token` (6N + attention).
Usage: `python benchmarks/models.py [--quick] [--threads N] [--device cpu]`; needs an idle machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lmforge.models import GPTConfig, LSTMConfig, build_model
from lmforge.runtime import autocast, resolve_device, set_threads

RESULTS = Path(__file__).resolve().parent / "results"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_flops(n: int, dtype: torch.dtype, device: torch.device, repeats: int) -> float:
    """Best-of-`repeats` FLOP/s of one (n x n) @ (n x n) matmul."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up: first call pays for allocation and kernel selection
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def step_seconds(model, batch: int, seq: int, dtype: torch.dtype, device, steps: int) -> float:
    """Median seconds of one forward+backward (cross-entropy on random tokens)."""
    tokens = torch.randint(0, model.vocab_size, (batch, seq + 1), device=device)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    times = []
    for i in range(steps + 2):  # two warm-up steps
        _sync(device)
        start = time.perf_counter()
        with autocast(device, dtype):
            logits = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        loss.backward()
        model.zero_grad(set_to_none=True)
        _sync(device)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def lstm_like(gpt_params: int, vocab: int, d_model: int) -> LSTMConfig:
    """A 2-layer LSTM whose parameter count is closest to `gpt_params` (d_hidden step 64)."""
    best, best_gap = None, None
    for d_hidden in range(64, 4097, 64):
        cfg = LSTMConfig(n_layers=2, d_model=d_model, d_hidden=d_hidden)
        gap = abs(build_model(cfg, vocab).num_params() - gpt_params)
        if best_gap is not None and gap > best_gap:
            break  # the count only grows with d_hidden
        best, best_gap = cfg, gap
    assert best is not None
    return best


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one step: a smoke test")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--vocab", type=int, default=4096, help="vocabulary size of both models")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: results/)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    threads = set_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    if args.quick:
        batch, seq, steps, n_mm = 2, 32, 1, 256
        gpt_cfg = GPTConfig(n_layers=2, n_heads=2, d_model=64, max_seq_len=32)
    else:
        batch, seq, steps, n_mm = 16, 256, 5, 2048
        gpt_cfg = GPTConfig(n_layers=6, n_heads=6, d_model=384, max_seq_len=256)
    peaks = {"fp32": matmul_flops(n_mm, torch.float32, device, repeats=3)}
    # Probe bf16 on a small matmul first: on CPUs without native bf16 (AVX2-only Zen 3) it runs
    # ~100x slower than fp32, and a full-size bf16 model step would take minutes.
    probe = matmul_flops(256, torch.bfloat16, device, repeats=2)
    native_bf16 = probe > 0.25 * matmul_flops(256, torch.float32, device, repeats=2)
    peaks["bf16"] = matmul_flops(n_mm, torch.bfloat16, device, repeats=3) if native_bf16 else probe
    dtypes = DTYPES if native_bf16 else {"fp32": torch.float32}
    if not native_bf16:
        print(f"bf16 matmul only {probe / 1e9:.1f} GFLOP/s (no native bf16): bf16 rows skipped")
    gpt = build_model(gpt_cfg, args.vocab).to(device)
    lstm_cfg = lstm_like(gpt.num_params(), args.vocab, gpt_cfg.d_model)
    models = {"gpt": gpt, "lstm": build_model(lstm_cfg, args.vocab).to(device)}
    rows = []
    for name, model in models.items():
        model.train()
        for dtype_name, dtype in dtypes.items():
            seconds = step_seconds(model, batch, seq, dtype, device, steps)
            tokens_per_s = batch * seq / seconds
            flops = model.flops_per_token(seq) * tokens_per_s
            rows.append({
                "model": name, "params": model.num_params(), "dtype": dtype_name,
                "step_ms": seconds * 1e3, "tokens_per_s": tokens_per_s,
                "flops_per_s": flops, "fraction_of_matmul_peak": flops / peaks[dtype_name],
            })  # fmt: skip
    report = {
        "quick": args.quick, "device": str(device), "threads": threads,
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "batch": batch, "seq_len": seq, "vocab_size": args.vocab,
        "matmul_flops_per_s": peaks, "matmul_n": n_mm,
        "gpt_config": gpt_cfg.model_dump(), "lstm_config": lstm_cfg.model_dump(), "rows": rows,
    }  # fmt: skip
    print_table(report)
    out = args.out or RESULTS / ("models_quick.json" if args.quick else "models.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


def print_table(report: dict) -> None:
    peaks = report["matmul_flops_per_s"]
    print(
        f"device {report['device']}, {report['threads']} threads, batch {report['batch']} x "
        f"seq {report['seq_len']}; matmul peak fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
        f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s"
    )
    print(f"{'model':6} {'params':>10} {'dtype':5} {'step ms':>9} {'tok/s':>9} {'GFLOP/s':>8} "
          f"{'of peak':>7}")  # fmt: skip
    for r in report["rows"]:
        print(
            f"{r['model']:6} {r['params']:>10,} {r['dtype']:5} {r['step_ms']:>9.1f} "
            f"{r['tokens_per_s']:>9.0f} {r['flops_per_s'] / 1e9:>8.1f} "
            f"{r['fraction_of_matmul_peak']:>7.1%}"
        )


if __name__ == "__main__":
    main()
