"""Training speed and quality: tokens/s, achieved FLOP/s against the matmul peak measured in the
same run, peak RSS, and validation loss against wall clock.

(a) GPT 6 layers x 384, seq 256, batch 64, vocab 65 (the nanoGPT shakespeare-char model) in fp32
    and bf16 autocast, timed through `Trainer.train_step` (the real step: AdamW, clipping), each
    in its own process so peak RSS is its own.
(b) `lmforge train configs/shakespeare_char.toml` on tinyshakespeare (char, last 10% val) as a
    subprocess: wall time from launch (start-up included) and val loss at each evaluation.
Usage: `python benchmarks/train.py [--quick] [--threads N]`. Needs an idle machine: with 2 threads
on 2 cores any other busy process slows PyTorch many times over. Writes results/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
SHAKESPEARE = (
    Path(os.environ.get("LMFORGE_SHARED_DATA", ROOT.parent / "shared" / "data"))
    / "tinyshakespeare"
    / "input.txt"
)


def gpt_step_benchmark(dtype_name: str, steps: int, threads: int, batch: int) -> dict:
    """Runs in a child process: time `steps` Trainer steps of the 6x384 GPT."""
    import numpy as np
    import torch

    from lmforge.config import build_config
    from lmforge.data.loader import TokenLoader
    from lmforge.models import build_model
    from lmforge.run.config import TrainConfig
    from lmforge.runtime import resolve_dtype, set_threads
    from lmforge.train.distributed import DistEnv
    from lmforge.train.interface import Components
    from lmforge.train.optim import build_optimizer
    from lmforge.train.peak import measure_matmul_tflops
    from lmforge.train.trainer import Trainer

    set_threads(threads)
    torch.manual_seed(0)
    overrides = {
        "model": {
            "n_layers": 6,
            "n_heads": 6,
            "d_model": 384,
            "max_seq_len": 256,
            "pos_emb": "learned",
            "norm": "layernorm",
            "mlp": "gelu",
        },
        "train": {"batch_size": batch, "max_steps": steps, "peak_tflops": 1.0},
        "dtype": dtype_name,
        "out": tempfile.mkdtemp(),
        "data": "synthetic",
    }
    config = build_config(TrainConfig, None, overrides)
    device, dtype = torch.device("cpu"), resolve_dtype(dtype_name)
    model = build_model(config.model, 65).train()
    tokens = np.random.default_rng(0).integers(0, 65, 2_000_000).astype(np.uint16)
    loader = TokenLoader([tokens], 256, batch, seed=0)
    optimizer = build_optimizer(model, config.optim, device)
    parts = Components(config, model, optimizer, loader, None, device, dtype=dtype)
    trainer = Trainer(parts, Path(config.out), DistEnv())
    peaks = {
        d: measure_matmul_tflops(device, d, 1.0, 1024) for d in (torch.float32, torch.bfloat16)
    }
    trainer.train_step()  # warm-up: allocator, kernels, optimizer state
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    seconds = time.perf_counter() - start
    tokens_per_s = steps * batch * 256 / seconds
    flops = model.flops_per_token(256) * tokens_per_s
    return {
        "config": f"gpt 6x384 seq256 batch{batch} {dtype_name}",
        "tokens_per_s": tokens_per_s,
        "gflops": flops / 1e9,
        # Best of a measurement before and after the steps: a busy moment only lowers a peak.
        "peak_fp32_gflops": 1e3
        * max(peaks[torch.float32], measure_matmul_tflops(device, torch.float32, 1.0, 1024)),
        "peak_bf16_gflops": 1e3
        * max(peaks[torch.bfloat16], measure_matmul_tflops(device, torch.bfloat16, 1.0, 1024)),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def run_child(dtype_name: str, steps: int, threads: int, batch: int) -> dict:
    cmd = [sys.executable, __file__, "--child", dtype_name, str(steps), str(batch)]
    cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["vs_fp32_peak"] = result["gflops"] / result["peak_fp32_gflops"]
    return result


def _has_fast_bf16(threads: int) -> bool:
    import torch

    from lmforge.train.peak import measure_matmul_tflops

    torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    fp32 = measure_matmul_tflops(cpu, torch.float32, 0.3, 512)
    return measure_matmul_tflops(cpu, torch.bfloat16, 0.3, 512) > fp32


def shakespeare_benchmark(quick: bool, threads: int, workdir: Path) -> dict:
    """Prepare tinyshakespeare and train the recipe; val loss against wall clock."""
    if not SHAKESPEARE.is_file():
        return {"skipped": f"{SHAKESPEARE} not found (set LMFORGE_SHARED_DATA)"}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    lmforge = [sys.executable, "-m", "lmforge"]
    data, out = workdir / "sc_data", workdir / "sc_run"
    prep = [*lmforge, "prepare", str(SHAKESPEARE), f"out={data}", "tokenizer.kind=char"]
    subprocess.run(prep, env=env, check=True, capture_output=True)
    extra = ["train.max_steps=20", "eval.every=10", "eval.batches=2"] if quick else []
    cmd = [
        *lmforge,
        "train",
        str(ROOT / "configs" / "shakespeare_char.toml"),
        f"data={data}",
        f"out={out}",
        *extra,
    ]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    elapsed = {r["step"]: r["elapsed_s"] for r in rows if "elapsed_s" in r}
    curve = [
        {"step": r["step"], "train_elapsed_s": elapsed.get(r["step"]), "val_loss": r["val_loss"]}
        for r in rows
        if "val_loss" in r
    ]
    speed = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r]
    info = json.loads((out / "run_info.json").read_text())
    return {
        "wall_s_including_startup": wall,
        "final_val_loss": curve[-1]["val_loss"] if curve else None,
        "val_curve": curve,
        "median_tokens_per_s": sorted(speed)[len(speed) // 2] if speed else None,
        "dtype": info.get("dtype"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        dtype_name, steps, batch = args.child[0], int(args.child[1]), int(args.child[2])
        print(json.dumps(gpt_step_benchmark(dtype_name, steps, args.threads, batch)))
        return
    steps, batch = (2, 8) if args.quick else (10, 64)
    results = {"machine": platform.processor() or platform.machine(), "threads": args.threads}
    results["gpt"] = [run_child("float32", steps, args.threads, batch)]
    if _has_fast_bf16(args.threads):
        results["gpt"].append(run_child("bfloat16", steps, args.threads, batch))
    else:
        print("bf16 autocast skipped: bf16 matmuls are slower than fp32 here (no native bf16)")
    print(
        f"{'config':<38} {'tok/s':>8} {'GFLOP/s':>8} {'fp32 pk':>8} {'bf16 pk':>8} "
        f"{'/fp32pk':>8} {'RSS GiB':>8}"
    )
    for r in results["gpt"]:
        print(
            f"{r['config']:<38} {r['tokens_per_s']:>8.0f} {r['gflops']:>8.1f} "
            f"{r['peak_fp32_gflops']:>8.1f} {r['peak_bf16_gflops']:>8.1f} "
            f"{r['vs_fp32_peak']:>8.1%} {r['peak_rss_gib']:>8.2f}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        sc = shakespeare_benchmark(args.quick, args.threads, Path(tmp))
    results["shakespeare_char"] = sc
    print("\ntinyshakespeare char, configs/shakespeare_char.toml:")
    if "skipped" in sc:
        print("  skipped: " + sc["skipped"])
    else:
        print(
            f"  wall {sc['wall_s_including_startup']:.1f} s (start-up included), dtype "
            f"{sc['dtype']}, median {sc['median_tokens_per_s'] or 0:,.0f} tokens/s"
        )
        for point in sc["val_curve"]:
            print(
                f"  step {point['step']:>5}  train time {point['train_elapsed_s'] or 0:>7.1f} s"
                f"  val_loss {point['val_loss']:.4f}"
            )
    RESULTS.mkdir(exist_ok=True)
    name = "train_quick.json" if args.quick else "train.json"
    (RESULTS / name).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
