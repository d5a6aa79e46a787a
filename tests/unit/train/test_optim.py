"""Optimizer parameter groups match the intent; every optimizer actually reduces a loss."""

from __future__ import annotations

import pytest
import torch

from lmforge.models import GPTConfig, LSTMConfig, build_model
from lmforge.run.config import OptimSection
from lmforge.train.optim import build_optimizer, decay_groups, muon_split

CPU = torch.device("cpu")


def tiny_gpt(**kw):
    cfg = GPTConfig(n_layers=2, d_model=32, n_heads=2, max_seq_len=16, **kw)
    return build_model(cfg, 64)


def test_decay_groups_split_matrices_from_vectors():
    model = tiny_gpt(bias=True, norm="layernorm")
    groups = {g["name"]: g for g in decay_groups(model, 0.1)}
    assert all(p.dim() >= 2 for p in groups["decay"]["params"])
    assert all(p.dim() < 2 for p in groups["no_decay"]["params"])
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["decay"]["weight_decay"] == 0.1
    n = sum(p.numel() for g in groups.values() for p in g["params"])
    assert n == model.num_params()


def test_muon_split_keeps_embeddings_and_head_on_adamw():
    model = tiny_gpt(tie_embeddings=False)
    hidden, rest = muon_split(model)
    hidden_ids = {id(p) for p in hidden}
    assert id(model.tok_emb.weight) not in hidden_ids
    assert id(model.lm_head.weight) not in hidden_ids
    assert id(model.blocks[0].attn.q_proj.weight) in hidden_ids
    assert all(p.dim() == 2 for p in hidden)
    assert len(hidden) + len(rest) == len(list(model.parameters()))


@pytest.mark.parametrize("name", ["adamw", "sgd", "muon"])
@pytest.mark.parametrize("kind", ["gpt", "lstm"])
def test_each_optimizer_lowers_the_loss(name, kind):
    torch.manual_seed(0)
    if kind == "gpt":
        model = tiny_gpt()
    else:
        model = build_model(LSTMConfig(n_layers=1, d_model=16, d_hidden=32), 64)
    opt = build_optimizer(model, OptimSection(name=name, lr=3e-3 if name != "sgd" else 0.3), CPU)
    x = torch.randint(0, 64, (4, 16))
    losses = []
    for _ in range(15):
        logits = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), x[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1
    state = opt.state_dict()
    torch.save(state, "/dev/null")  # state dicts are plain tensors and containers
    assert all("initial_lr" in g for g in opt.param_groups)


def test_muon_matches_torch_muon_in_fp32():
    """Our Muon (fp32 Newton-Schulz) takes torch.optim.Muon's step up to bf16 rounding."""
    from lmforge.train.optim import Muon

    torch.manual_seed(0)
    w = torch.randn(24, 40)
    grads = [torch.randn(24, 40) for _ in range(3)]
    ours, ref = torch.nn.Parameter(w.clone()), torch.nn.Parameter(w.clone())
    opt_ours = Muon([ours], lr=0.01, weight_decay=0.1, momentum=0.9)
    opt_ref = torch.optim.Muon(
        [ref], lr=0.01, weight_decay=0.1, momentum=0.9, adjust_lr_fn="match_rms_adamw"
    )
    for g in grads:
        ours.grad, ref.grad = g.clone(), g.clone()
        opt_ours.step()
        opt_ref.step()
    assert torch.allclose(ours, ref, atol=2e-3)
    assert not torch.allclose(ours, w, atol=1e-2)


@pytest.mark.parametrize(
    ("bf16_peak", "expected"),
    [(0.42, torch.bfloat16), (0.25, torch.float32), (0.002, torch.float32)],
)
def test_newton_schulz_dtype_auto_follows_the_measured_cpu_peaks(
    tmp_path, monkeypatch, bf16_peak, expected
):
    """auto: bf16 only where this CPU's cached bf16 matmul peak is >= 1.5x its fp32 peak (Zen 4:
    0.42 vs 0.21 TFLOP/s); an explicit setting wins; MuonAdamW iterates in the chosen dtype."""
    import json

    from lmforge.train.optim import MuonAdamW, newton_schulz_dtype
    from lmforge.train.peak import cpu_key

    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path))
    peaks = {"float32": {"mkl": 0.14, "onednn": 0.21}, "bfloat16": {"mkl": bf16_peak}}
    key = cpu_key(torch.get_num_threads())
    (tmp_path / "peak_flops.json").write_text(json.dumps({key: peaks}))
    cpu = torch.device("cpu")
    assert newton_schulz_dtype("auto", cpu) == expected
    assert newton_schulz_dtype("float32", cpu) == torch.float32
    assert newton_schulz_dtype("bfloat16", cpu) == torch.bfloat16
    model = build_model(GPTConfig(n_layers=1, n_heads=2, d_model=16), 32)
    opt = MuonAdamW(model, OptimSection(name="muon"), cpu)
    assert opt.optimizers[0].ns_dtype == expected


def test_bf16_newton_schulz_step_is_close_to_fp32():
    from lmforge.train.optim import Muon

    torch.manual_seed(0)
    w, grad = torch.randn(32, 96), torch.randn(32, 96)
    steps = []
    for dtype in (torch.float32, torch.bfloat16):
        param = torch.nn.Parameter(w.clone())
        param.grad = grad.clone()
        Muon([param], lr=0.05, weight_decay=0.0, ns_dtype=dtype).step()
        steps.append(param.detach() - w)
    exact, reduced = steps
    assert reduced.dtype == torch.float32
    relative = (reduced - exact).norm() / exact.norm()
    assert 0 < relative < 0.05, relative
