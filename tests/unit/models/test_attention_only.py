"""`mlp = "none"`: attention-only GPT blocks (induction heads); other configs keep their keys."""

from __future__ import annotations

import torch

from lmforge.models import build_model
from lmforge.models.config import GPTConfig


def _keys(cfg: GPTConfig) -> list[str]:
    return list(build_model(cfg, 20).state_dict())


def test_attention_only_blocks_have_no_mlp_and_count_by_hand() -> None:
    cfg = GPTConfig(n_layers=2, d_model=16, n_heads=2, max_seq_len=8, mlp="none")
    model = build_model(cfg, 20)
    assert not any("mlp" in k for k in model.state_dict())
    d = 16
    block = 4 * d * d + d  # q, k, v, o + the attention norm
    assert model.num_params(include_embeddings=False) == 2 * block + d + 20 * d  # + norm + head
    assert model.flops_per_token(8) == 6 * (2 * block + d + 20 * d) + 12 * 2 * d * 8
    tokens = torch.randint(0, 20, (3, 8))
    logits = model(tokens)
    assert logits.shape == (3, 8, 20) and torch.isfinite(logits).all()
    logits.sum().backward()  # trains


def test_existing_configs_keep_their_state_dict_keys() -> None:
    swiglu = _keys(GPTConfig(n_layers=1, d_model=16, n_heads=2, max_seq_len=8))
    assert [k for k in swiglu if k.startswith("blocks.0.")] == [
        "blocks.0.attn_norm.weight",
        "blocks.0.attn.q_proj.weight",
        "blocks.0.attn.k_proj.weight",
        "blocks.0.attn.v_proj.weight",
        "blocks.0.attn.o_proj.weight",
        "blocks.0.mlp_norm.weight",
        "blocks.0.mlp.gate_proj.weight",
        "blocks.0.mlp.up_proj.weight",
        "blocks.0.mlp.down_proj.weight",
    ]
    gelu = _keys(GPTConfig(n_layers=1, d_model=16, n_heads=2, max_seq_len=8, mlp="gelu"))
    assert "blocks.0.mlp.up_proj.weight" in gelu and "blocks.0.mlp_norm.weight" in gelu


def test_attention_only_equals_a_block_whose_mlp_is_zeroed() -> None:
    torch.manual_seed(0)
    full = build_model(GPTConfig(n_layers=2, d_model=16, n_heads=2, max_seq_len=8), 20)
    bare = build_model(GPTConfig(n_layers=2, d_model=16, n_heads=2, max_seq_len=8, mlp="none"), 20)
    with torch.no_grad():
        for block in full.blocks:
            block.mlp.down_proj.weight.zero_()
    missing, unexpected = bare.load_state_dict(full.state_dict(), strict=False)
    assert missing == [] and all(".mlp" in k for k in unexpected)
    tokens = torch.randint(0, 20, (2, 8))
    torch.testing.assert_close(bare(tokens), full(tokens), rtol=0, atol=0)
