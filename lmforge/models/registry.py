"""The model registry: `build_model`, the `LanguageModel` protocol, and a model on disk as
`model.safetensors` + `model_config.toml` (`save_model`, `load_model`).

`lmforge.models` re-exports these names lazily (see its docstring for the interface itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from pydantic import Field
from torch import nn

from lmforge.config import Section, load_config, save_config
from lmforge.errors import CheckpointError, ConfigError
from lmforge.models.config import GPTConfig, LSTMConfig, ModelConfig
from lmforge.models.gpt import GPT
from lmforge.models.lstm import LSTMLanguageModel

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

    def flops_per_token(self, seq_len: int, lm_head: bool = True) -> int: ...

    @property
    def max_context(self) -> int | None: ...


def build_model(cfg: GPTConfig | LSTMConfig, vocab_size: int) -> nn.Module:
    """A freshly initialised model of `cfg.kind` for a vocabulary of `vocab_size` tokens."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size={vocab_size} must be >= 1; check the data dir's meta.json")
    return _REGISTRY[cfg.kind](cfg, vocab_size)


def with_dropout(
    model: nn.Module, cfg: GPTConfig | LSTMConfig, dropout: float
) -> tuple[nn.Module, GPTConfig | LSTMConfig]:
    """`model`'s weights in a model built with `dropout`, and that model's config.

    Dropout adds no tensors, so every weight carries over exactly; the new model is on the same
    device and in the same (train/eval) mode as `model`."""
    config = cfg.model_copy(update={"dropout": dropout})
    rebuilt = build_model(config, int(model.vocab_size))
    rebuilt.load_state_dict(model.state_dict())
    device = next(model.parameters()).device
    return rebuilt.to(device).train(model.training), config


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
