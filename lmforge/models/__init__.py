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

from pathlib import Path
from typing import Annotated, Any, Protocol

import torch
from pydantic import Discriminator, Field, Tag
from torch import nn

from lmforge.config import Section, load_config, save_config
from lmforge.errors import CheckpointError, ConfigError
from lmforge.models.gpt import GPT, GPTConfig, KVCache
from lmforge.models.lstm import LSTMConfig, LSTMLanguageModel, LSTMState

__all__ = [
    "GPT",
    "GPTConfig",
    "KVCache",
    "LSTMConfig",
    "LSTMLanguageModel",
    "LSTMState",
    "LanguageModel",
    "ModelConfig",
    "build_model",
    "load_model",
    "model_state_dict_for_save",
    "save_model",
]


def _model_kind(value: Any) -> str | None:
    # Like Field(discriminator="kind"), except that a [model] table without `kind` means gpt,
    # the default, instead of an error.
    if isinstance(value, dict):
        return value.get("kind", "gpt")
    return getattr(value, "kind", None)


ModelConfig = Annotated[
    Annotated[GPTConfig, Tag("gpt")] | Annotated[LSTMConfig, Tag("lstm")],
    Discriminator(_model_kind),
]

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "model_config.toml"
FORMAT_VERSION = 1

_REGISTRY: dict[str, type[nn.Module]] = {"gpt": GPT, "lstm": LSTMLanguageModel}


class LanguageModel(Protocol):
    """What trainers, evaluators and generators may rely on, whatever the architecture."""

    config: Any
    vocab_size: int

    def __call__(
        self, tokens: torch.Tensor, cache: Any = None, pad_mask: torch.Tensor | None = None
    ) -> torch.Tensor: ...

    def init_cache(
        self,
        batch_size: int,
        max_len: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Any: ...

    def num_params(self, include_embeddings: bool = True) -> int: ...

    def flops_per_token(self, seq_len: int) -> int: ...

    @property
    def max_context(self) -> int | None: ...


def build_model(cfg: GPTConfig | LSTMConfig, vocab_size: int) -> nn.Module:
    """A freshly initialised model of `cfg.kind` for a vocabulary of `vocab_size` tokens."""
    if vocab_size < 1:
        raise ConfigError(f"vocab_size={vocab_size} must be >= 1; check the data dir's meta.json")
    return _REGISTRY[cfg.kind](cfg, vocab_size)


class SavedModel(Section):
    """The contents of model_config.toml."""

    format_version: int = Field(FORMAT_VERSION, description="model_config.toml format version")
    vocab_size: int = Field(..., ge=1, description="vocabulary size the weights were built for")
    model: ModelConfig = Field(default_factory=GPTConfig, description="the architecture")


def _unwrap(model: nn.Module) -> nn.Module:
    # torch.compile wraps the module and prefixes its keys with `_orig_mod.`.
    return getattr(model, "_orig_mod", model)


def model_state_dict_for_save(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each shared tensor once (safetensors refuses aliases).

    A tied head (`lm_head.weight` is `tok_emb.weight`) is stored under the first name only;
    `load_model` restores the tie by building the model from its config, which ties again.
    """
    model = _unwrap(model)
    aliases = _alias_names(model)
    return {
        name: tensor.detach().contiguous()
        for name, tensor in model.state_dict().items()
        if name not in aliases
    }


def _alias_names(model: nn.Module) -> set[str]:
    """Names of parameters that are the same tensor as an earlier parameter (tied weights)."""
    every = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    return every - {name for name, _ in model.named_parameters()}


def save_model(model: nn.Module, cfg: GPTConfig | LSTMConfig, directory: str | Path) -> None:
    """Write `model.safetensors` and `model_config.toml` (with vocab_size) into `directory`.

    Each file is written under a temp name and renamed, the config last, so a reader never sees
    a config without its weights.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.cpu() for k, v in model_state_dict_for_save(model).items()}
    tmp = directory / (MODEL_FILE + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(directory / MODEL_FILE)
    vocab_size = int(_unwrap(model).vocab_size)
    save_config(SavedModel(vocab_size=vocab_size, model=cfg), directory / CONFIG_FILE)


def load_model(
    directory: str | Path, device: torch.device | str = "cpu"
) -> tuple[nn.Module, GPTConfig | LSTMConfig]:
    """Read a model written by `save_model`; returns (model in eval mode on `device`, config)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    for name in (CONFIG_FILE, MODEL_FILE):
        if not (directory / name).is_file():
            raise CheckpointError(
                f"{directory / name} not found; point at a directory written by lmforge "
                "(a run's checkpoint or an export)"
            )
    try:
        saved = load_config(SavedModel, directory / CONFIG_FILE)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    if saved.format_version > FORMAT_VERSION:
        raise CheckpointError(
            f"{directory / CONFIG_FILE} has format_version {saved.format_version} (this lmforge "
            f"reads <= {FORMAT_VERSION}); upgrade lmforge"
        )
    model = build_model(saved.model, saved.vocab_size)
    try:
        state = load_file(str(directory / MODEL_FILE))
    except SafetensorError as exc:
        msg = f"{directory / MODEL_FILE} is not a valid safetensors file ({exc}); re-save it"
        raise CheckpointError(msg) from None
    _load_state(model, state, directory / MODEL_FILE)
    return model.to(device).eval(), saved.model


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load weights strictly, except that aliases of a tied weight are absent by design."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{path} does not fit its model_config.toml: {first}") from None
    missing = [k for k in missing if k not in _alias_names(model)]
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit its model_config.toml (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); were the two files written by the same save?"
        )
