"""The decode layout: column-major linear weights change strides only (same module tree, keys,
shapes, tying, logits within float rounding), and a batch still decodes each row as it decodes
alone, which `lmforge serve` relies on. The packed oneDNN linears for several rows keep the
parameters and the logits, and step aside whenever gradients are wanted."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmforge.infer.generator import GenerationParams, Generator
from lmforge.infer.inference_model import column_major_linears_, prepare_for_decoding
from lmforge.models import GPTConfig, LSTMConfig, build_model

VOCAB = 40
PROMPTS = [[3, 1, 4, 1, 5], [9, 2], [6, 5, 3, 5, 8, 9, 7, 9], [2]]


def _model(kind: str) -> nn.Module:
    torch.manual_seed(2)
    if kind == "lstm":
        cfg = LSTMConfig(n_layers=2, d_model=32, d_hidden=48)
    else:
        cfg = GPTConfig(n_layers=2, n_heads=4, d_model=32, max_seq_len=64, tie_embeddings=True)
    return build_model(cfg, VOCAB).eval()


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
def test_relayout_changes_strides_not_the_model(kind: str) -> None:
    model = _model(kind)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randint(0, VOCAB, (3, 12))
    with torch.inference_mode():
        reference = model(x)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert column_major_linears_(model) == len({id(m.weight) for m in linears})
    after = model.state_dict()
    assert list(after) == list(before)
    for key, value in after.items():
        assert torch.equal(value, before[key]), key  # the same numbers, only laid out anew
    for m in linears:
        assert m.weight.t().is_contiguous() and not m.weight.is_contiguous()
    if kind == "gpt":
        assert model.lm_head.weight is model.tok_emb.weight  # still tied
    with torch.inference_mode():
        torch.testing.assert_close(model(x), reference, rtol=1e-5, atol=1e-5)
    assert column_major_linears_(model) == 0  # idempotent


@pytest.mark.parametrize("kernel", ["mkl", "onednn"])
def test_batched_decoding_equals_each_row_alone_in_the_decode_layout(kernel: str) -> None:
    model = prepare_for_decoding(_model("gpt"), multi_row_kernel=kernel)
    params = GenerationParams(max_new_tokens=16, temperature=0)
    gen = Generator(model)
    batch = [c.token_ids for c in gen.generate(PROMPTS, params)]
    alone = [gen.generate([p], params)[0].token_ids for p in PROMPTS]
    assert batch == alone


def test_low_precision_and_compiled_decoding_keep_the_row_major_layout() -> None:
    bf16 = prepare_for_decoding(_model("gpt"), torch.bfloat16)
    assert all(p.is_contiguous() and p.dtype == torch.bfloat16 for p in bf16.parameters())
    compiled = prepare_for_decoding(_model("gpt"), compile=True)
    assert all(p.is_contiguous() for p in compiled.parameters())
    assert not compiled.training


def test_packed_onednn_linears_keep_the_parameters_and_the_logits() -> None:
    model = _model("gpt")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shapes = {"one row": (1, 1), "decode batch": (5, 1), "prefill": (3, 12), "long": (2, 40)}
    inputs = {name: torch.randint(0, VOCAB, shape) for name, shape in shapes.items()}
    with torch.inference_mode():
        reference = {name: model(x) for name, x in inputs.items()}
    prepared = prepare_for_decoding(model, multi_row_kernel="onednn")
    linears = [m for m in prepared.modules() if isinstance(m, nn.Linear)]
    assert linears and all("forward" in vars(m) for m in linears)  # the packed path is on
    after = prepared.state_dict()
    assert list(after) == list(before)
    for key, value in after.items():
        assert torch.equal(value, before[key]), key
    with torch.inference_mode():  # 1 row: MKL; 5 and 36 rows: packed; 80 rows: MKL
        for name, x in inputs.items():
            torch.testing.assert_close(prepared(x), reference[name], rtol=1e-5, atol=1e-5)
    # With gradients wanted the layers run torch's own linear, so backward reaches the weights.
    prepared(inputs["prefill"]).sum().backward()
    assert all(m.weight.grad is not None for m in linears)


def test_mkl_leaves_the_modules_alone() -> None:
    prepared = prepare_for_decoding(_model("gpt"), multi_row_kernel="mkl")
    assert not any("forward" in vars(m) for m in prepared.modules())
