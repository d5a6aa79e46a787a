"""Helpers for the server tests: tiny trained runs and a real `lmforge serve` subprocess.

The runs are trained here for a few hundred milliseconds on a short text (a plain AdamW loop on the
real model), so that greedy output is meaningful and valid text (a byte-level run then writes
whole UTF-8 characters). The server is the CLI verb in its own process, bound to 127.0.0.1 on a
free port it reports on stderr; `stop()` sends SIGTERM and returns the exit code.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import torch
import torch.nn.functional as F

from lmforge.data.tokenizer import Tokenizer, build_byte, build_char
from lmforge.models import GPTConfig, LSTMConfig, build_model
from lmforge.run.rundir import create_run_dir

EOT = "<|endoftext|>"
TEXT = (
    "the quick brown fox jumps over the lazy dog. a stitch in time saves nine. "
    "all that glitters is not gold. the early bird catches the worm. "
)
TEXT_ZH = "你好，世界！🙂 今天天气很好。我们去公园散步吧 🌳🚲。"
KEY = "sk-lmforge-test"


def char_tokenizer() -> Tokenizer:
    return build_char([TEXT], [EOT])


def train_run(
    path: Path,
    kind: str,
    tokenizer: Tokenizer,
    text: str,
    steps: int = 150,
    max_seq_len: int = 256,
    seed: int = 0,
) -> Path:
    """A run dir whose tiny model has been trained to continue `text` (windows of 32 tokens)."""
    torch.set_num_threads(1)  # module fixtures run before the per-test one-thread fixture
    torch.manual_seed(seed)
    if kind == "gpt":
        cfg: Any = GPTConfig(n_layers=2, n_heads=2, d_model=32, max_seq_len=max_seq_len)
    else:
        cfg = LSTMConfig(n_layers=1, d_model=32, d_hidden=64)
    model = build_model(cfg, tokenizer.vocab_size)
    ids = torch.tensor(tokenizer.encode(text * 4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - 33, (16,), generator=gen)
        batch = torch.stack([ids[s : s + 33] for s in starts.tolist()])
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return create_run_dir(path, model.eval(), cfg, tokenizer)


def byte_run(path: Path) -> Path:
    """A byte-level GPT that has learned TEXT_ZH as the ChatML reply to "🙂"."""
    chat = f"<|im_start|>user\n🙂<|im_end|>\n<|im_start|>assistant\n{TEXT_ZH}<|im_end|>\n"
    return train_run(path, "gpt", build_byte([EOT]), chat, steps=400)


def imported_run(tmp: Path) -> Path:
    """A tiny random Hugging Face Llama, made with `transformers` and run through lmforge import."""
    import importlib.util

    from lmforge_testing import require

    require(importlib.util.find_spec("transformers") is not None, "transformers not installed")
    os.environ["HF_HUB_OFFLINE"] = "1"
    import transformers

    from lmforge.interop.hf_tokenizer import write_hf_tokenizer
    from lmforge.interop.importer import import_hf

    tokenizer = char_tokenizer()
    config = transformers.LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=tokenizer.eot_id,
        eos_token_id=tokenizer.eot_id,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():  # peaky logits, so greedy decoding has no near-ties
        model.lm_head.weight.mul_(20)
    hf_dir = tmp / "hf"
    model.save_pretrained(hf_dir)
    write_hf_tokenizer(tokenizer, hf_dir, model_max_length=64)
    return import_hf(hf_dir, tmp / "imported")


class Server:
    """`lmforge serve RUN port=0 ...` in a subprocess (one torch thread)."""

    def __init__(self, run: Path, *overrides: str) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "LMFORGE_API_KEY": ""}
        cmd = [sys.executable, "-m", "lmforge", "serve", str(run), "port=0", "threads=1"]
        self.proc = subprocess.Popen(
            [*cmd, *overrides],
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.log: list[str] = []
        self.url = self._wait_for_address()
        threading.Thread(target=self._drain, daemon=True).start()
        self._wait_healthy()

    def _wait_for_address(self) -> str:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + "".join(self.log))
            self.log.append(line)
            found = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
            if found:
                return found.group(1)
        raise RuntimeError("server did not report its address:\n" + "".join(self.log))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server never became healthy:\n" + "".join(self.log))

    def health(self) -> dict[str, Any]:
        return httpx.get(self.url + "/health", timeout=5).json()

    def metric(self, name: str) -> float:
        text = httpx.get(self.url + "/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        raise KeyError(name)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)
