"""Decode speed of the 6-layer/384-wide GPT (vocab 65, random init): tokens/s at batch 1 and 8,
eager and compiled (`Generator(compile=True)`), with and without the KV cache, time to first
token, and the memory-bandwidth bound measured in the same run (read GB/s of a large tensor /
fp32 weight bytes = tokens/s if each token read every weight once from memory, nothing else),
and the time of the step's matrix multiplies alone (the floor of any eager fp32 decode step).
Each row is decoded `--repeats` times (this machine is noisy): the median and the best are kept.

GPT-2 style by default (learned positions, LayerNorm, GELU, biases, tied head: nanoGPT's
Shakespeare-char model), `--style llama` for RoPE/RMSNorm/SwiGLU. Greedy decoding, no stop token.
Usage: `python benchmarks/generate.py [--quick] [--threads N] [--new-tokens 500]`; idle machine.
Writes `benchmarks/results/generate.json`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from results_io import RESULTS, table, write_result

from lmforge.infer.generator import GenerationParams, GenerationStats, Generator
from lmforge.models import GPTConfig, build_model

VOCAB = 65
PROMPT_TOKENS = 16


def build(style: str, max_seq_len: int) -> torch.nn.Module:
    common = {"n_layers": 6, "n_heads": 6, "d_model": 384, "max_seq_len": max_seq_len}
    if style == "gpt2":
        cfg = GPTConfig(
            **common,
            pos_emb="learned",
            norm="layernorm",
            mlp="gelu",
            bias=True,
            tie_embeddings=True,
        )
    else:
        cfg = GPTConfig(**common)
    torch.manual_seed(0)
    return build_model(cfg, VOCAB).eval()


def read_gbps(megabytes: int = 256, repeats: int = 10) -> float:
    """Bytes read per second by a sum over a large tensor on all threads (the best of `repeats`):
    the rate at which a decode step can stream weights that do not fit in cache."""
    src = torch.ones(megabytes * 2**20 // 4)
    src.sum()  # fault the pages in
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        src.sum()
        best = min(best, time.perf_counter() - start)
    return src.numel() * 4 / best / 1e9


def memcpy_gbps(megabytes: int = 256, repeats: int = 10) -> float:
    """Bytes copied per second by a large tensor copy (the best of `repeats`)."""
    src = torch.ones(megabytes * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)  # fault the pages in
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return src.numel() * 4 / best / 1e9


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the weights a decode step reads (a tied matrix once; learned positions: one row)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    if model.pos_emb is not None:
        pos = model.pos_emb.weight
        total -= (pos.size(0) - 1) * pos.size(1) * pos.element_size()
    return total


def matmul_floor_ms(model: torch.nn.Module, batch: int, repeats: int = 20) -> float:
    """Milliseconds of one decode step's matmuls alone: every nn.Linear once on `batch` rows, the
    weights streamed from memory as in decoding (the median of `repeats`)."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = {n: torch.randn(batch, n) for n in {m.in_features for m in linears}}
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 2):
            start = time.perf_counter()
            for m in linears:
                m(inputs[m.in_features])
            times.append(time.perf_counter() - start)
    return sorted(times[2:])[repeats // 2] * 1e3


def decode(generator: Generator, batch: int, new_tokens: int, cache: bool) -> GenerationStats:
    gen = torch.Generator().manual_seed(batch)
    prompts = torch.randint(0, VOCAB, (batch, PROMPT_TOKENS), generator=gen).tolist()
    params = GenerationParams(max_new_tokens=new_tokens, temperature=0, use_cache=cache)
    job = generator.start(prompts, params)
    for _ in job:
        pass
    return job.stats


def measure(generator: Generator, batch: int, new_tokens: int, cache: bool, repeats: int) -> dict:
    start = time.perf_counter()
    decode(generator, batch, min(new_tokens, 20), cache)  # warm-up (allocator, oneDNN, compile)
    warmup_s = time.perf_counter() - start
    runs = sorted(
        (decode(generator, batch, new_tokens, cache) for _ in range(repeats)),
        key=lambda stats: stats.decode_tokens_per_s,
    )
    median, best = runs[len(runs) // 2], runs[-1]
    return {
        "mode": "compiled" if generator.step is not None else "eager",
        "batch": batch,
        "cache": cache,
        "new_tokens": new_tokens,
        "tokens_per_s": median.decode_tokens_per_s,
        "best_tokens_per_s": best.decode_tokens_per_s,
        "tokens_per_s_per_row": median.decode_tokens_per_s / batch,
        "first_token_ms": median.first_token_s * 1e3,
        "total_s": median.total_s,
        "warmup_s": warmup_s,  # includes the compile for compiled rows
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few tokens, to check it runs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--new-tokens", type=int, default=500)
    parser.add_argument("--style", choices=("gpt2", "llama"), default="gpt2")
    parser.add_argument("--repeats", type=int, default=5, help="decodes per row (median, best)")
    parser.add_argument("--out", type=Path, help="JSON path (default results/generate.json)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    new_tokens = 24 if args.quick else args.new_tokens
    model = build(args.style, max_seq_len=max(1024, PROMPT_TOKENS + new_tokens))
    gbps = read_gbps(64 if args.quick else 256)
    copy_gbps = memcpy_gbps(64 if args.quick else 256)
    nbytes = weight_bytes(model)
    bound = gbps * 1e9 / nbytes
    floor_ms = {batch: matmul_floor_ms(model, batch, 5 if args.quick else 20) for batch in (1, 8)}
    repeats = 1 if args.quick else args.repeats
    eager, compiled = Generator(model), Generator(model, compile=True)
    uncached_tokens = new_tokens if args.quick else min(new_tokens, 200)
    rows = []
    with torch.inference_mode():
        for generator, cache in ((compiled, True), (eager, True), (eager, False)):
            for batch in (1, 8):
                n = new_tokens if cache else uncached_tokens
                # The uncached baseline is slow and only a reference: one decode is enough.
                rows.append(measure(generator, batch, n, cache, repeats if cache else 1))
    print(
        f"GPT 6L/384 ({args.style}), {model.num_params():,} params, {nbytes / 1e6:.1f} MB fp32 "
        f"weights; read {gbps:.1f} GB/s (memcpy {copy_gbps:.1f}) -> bandwidth bound "
        f"{bound:.0f} tokens/s at batch 1; {torch.get_num_threads()} threads"
    )
    print(
        f"matmuls alone: {floor_ms[1]:.2f} ms/step at batch 1 (<= {1e3 / floor_ms[1]:.0f} "
        f"tokens/s), {floor_ms[8]:.2f} ms/step at batch 8 (<= {8e3 / floor_ms[8]:.0f} tokens/s)"
    )
    print(
        "| mode | cache | batch | new tokens | tokens/s (median) | best | per row | "
        "% of bound | first token ms | warm-up s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        share = 100 * r["tokens_per_s_per_row"] / bound  # a step reads the weights once
        print(
            f"| {r['mode']} | {'yes' if r['cache'] else 'no'} | {r['batch']} | "
            f"{r['new_tokens']} | {r['tokens_per_s']:.0f} | {r['best_tokens_per_s']:.0f} | "
            f"{r['tokens_per_s_per_row']:.0f} | {share:.0f}% | {r['first_token_ms']:.1f} | "
            f"{r['warmup_s']:.1f} |"
        )
    for r in rows:
        r["label"] = r["mode"] + ("" if r["cache"] else ", no cache")
        r["share_of_bound"] = r["tokens_per_s_per_row"] / bound
    decode = table(
        [
            ["mode", "label", ""],
            ["batch", "batch", ""],
            ["new tokens", "new_tokens", ""],
            ["tokens/s (median)", "tokens_per_s", ".0f"],
            ["best", "best_tokens_per_s", ".0f"],
            ["per row", "tokens_per_s_per_row", ".0f"],
            ["% of bound", "share_of_bound", ".0%"],
            ["first token ms", "first_token_ms", ".1f"],
            ["warm-up s", "warmup_s", ".1f"],
        ],
        rows,
    )
    result = {
        "model": f"gpt 6L/384 {args.style}",
        "params": model.num_params(),
        "weight_bytes": nbytes,
        "read_gbps": gbps,
        "memcpy_gbps": copy_gbps,
        "bandwidth_bound_tokens_per_s": bound,
        "matmul_floor_ms": {str(b): ms for b, ms in floor_ms.items()},
        "quick": args.quick,
        "rows": rows,
        "tables": {"decode": decode},
    }
    # A smoke run's numbers mean nothing; keep them out of the results folder.
    out = args.out or (
        Path("/tmp/generate_quick.json") if args.quick else RESULTS / "generate.json"
    )
    write_result(out, result, torch.get_num_threads())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
