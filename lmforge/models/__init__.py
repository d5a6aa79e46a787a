"""Model registry, `build_model`, and saving/loading a model as safetensors + TOML config.

`model.kind` selects the architecture: `gpt` (`gpt.GPT`, config `GPTConfig`) or `lstm`
(`lstm.LSTMLanguageModel`, config `LSTMConfig`). `vocab_size` always comes from the data dir.

Every model follows `LanguageModel`: `forward(tokens (B, T), cache=None, pad_mask=None) -> logits
(B, T, V) fp32`, `init_cache(batch_size, max_len=None, device=None, dtype=None)`, `num_params`,
`flops_per_token`, `.config`, `.vocab_size`, `.max_context` (GPT: max_seq_len; LSTM: None).

Cache and padding (the same calls for both kinds):
  1. Left-pad the prompts to one length T0; `pad_mask` (B, T0) bool is True at pad tokens.
  2. `cache = model.init_cache(B, max_len=T0 + max_new_tokens)` (GPT: slots incl. pads, default
     max_seq_len; LSTM: max_len ignored).
  3. Prefill: `logits = model(prompt_ids, cache=cache, pad_mask=pad_mask)`; `logits[:, -1]` is each
     row's next-token distribution (the last column is real for every row when left-padded).
  4. Decode: `logits = model(next_ids[:, None], cache=cache)` once per step, every row advancing.
     A row that is finished may keep decoding a filler token, or pass `pad_mask` (B, 1) True
     for it so that its cache is left alone.
Pads never advance a row's position (GPT positions count real tokens only) and are never attended
(GPT) or leave the state unchanged (LSTM), so each row's logits equal running it alone. The cache
is updated in place. GPT `KVCache`: `length` (slots used), `pos` (B,) next position per row,
`valid` (B, max_len), `reorder_(index)`. LSTM `LSTMState`: `h`, `c` (n_layers, B, d_hidden),
`detach_()` for truncated BPTT, `reorder_(index)`. Without a cache, `pad_mask` works the same way.
"""

from __future__ import annotations

import importlib
from typing import Any

from lmforge.models.config import GPTConfig, LSTMConfig, ModelConfig

# Names importable from `lmforge.models`, and the module that defines each. The configs load
# eagerly (no torch); the rest on first use, so that reading a recipe or `--help` imports no torch.
_LAZY = {
    "GPT": "lmforge.models.gpt",
    "KVCache": "lmforge.models.gpt",
    "LSTMLanguageModel": "lmforge.models.lstm",
    "LSTMState": "lmforge.models.lstm",
    "LanguageModel": "lmforge.models.registry",
    "SavedModel": "lmforge.models.registry",
    "build_model": "lmforge.models.registry",
    "load_model": "lmforge.models.registry",
    "save_model": "lmforge.models.registry",
    "model_state_dict_for_save": "lmforge.models.registry",
    "MODEL_FILE": "lmforge.models.registry",
    "CONFIG_FILE": "lmforge.models.registry",
    "FORMAT_VERSION": "lmforge.models.registry",
}

__all__ = ["GPTConfig", "LSTMConfig", "ModelConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lmforge.models' has no attribute '{name}'")
