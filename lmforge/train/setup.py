"""Building what a training run needs from its config: device, data, model, optimizer, loaders.

Owns construction and the config checks that need the data or the model (context length, global
batch, tokenizer match for `init.from`); the loop is `trainer.py`'s, run-dir rules `session.py`'s.
Order matters: weights are loaded before DDP/FSDP wrapping (DDP then broadcasts them, FSDP shards
them), and the optimizer is built after wrapping (FSDP2 swaps parameters for DTensors).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from lmforge.data.loader import TokenLoader
from lmforge.errors import ConfigError, DataError
from lmforge.models import build_model
from lmforge.run.config import TrainConfig
from lmforge.runtime import autocast, resolve_dtype, seed_everything, set_threads, tune_malloc
from lmforge.train import distributed as dist_utils
from lmforge.train.distributed import DistEnv
from lmforge.train.interface import Components
from lmforge.train.optim import build_optimizer
from lmforge.train.peak import choose_dtype
from lmforge.train.session import Session
from lmforge.train.state import TrainState, restore_model_weights

log = logging.getLogger(__name__)


def build_components(session: Session, env: DistEnv, device: torch.device) -> Components:
    """Data, model, optimizer and loaders for `session` on `device` (this rank's).

    The returned config is the effective one (with `init.from`, its `model` is the source
    run's); the model is wrapped for DDP/FSDP/compile as configured; the objective is the
    language model's (left to the Trainer, which adds bits per byte from the tokenizer)."""
    from lmforge.data.reader import DataDir

    config = session.config
    set_threads(config.train.threads)
    if device.type == "cpu" and config.train.tune_malloc and tune_malloc():
        log.debug("glibc malloc tuned: no mmap for large blocks, no heap trimming")
    dtype = resolve_train_dtype(config.dtype, device)
    autocast(device, dtype)  # fails early for fp16 on CPU
    data = DataDir.open(config.data)
    seed_everything(config.seed)
    model, config = _build_model(config, data, session)
    _check_context(config, model)
    if session.resume_dir is not None:
        restore_model_weights(model, session.resume_dir)
    model.to(device).train()
    wrapped = dist_utils.wrap_model(model, env, config.train.parallel, device)
    if config.compile is True:  # `auto` is decided by the Trainer after a few eager steps
        wrapped = torch.compile(wrapped)
    if env.enabled:
        # Same init on every rank (seeded above), different dropout masks from here on.
        torch.manual_seed(config.seed + env.rank)
    optimizer = build_optimizer(model, config.optim, device)
    train_loader, val_loader = _build_loaders(config, data, env)
    state = TrainState.from_dict(session.resume_state or {})
    return Components(
        config,
        wrapped,
        optimizer,
        train_loader,
        val_loader,
        device,
        tokenizer=data.tokenizer,
        dtype=dtype,
        state=state,
    )


def resolve_train_dtype(name: str, device: torch.device) -> torch.dtype:
    """The autocast dtype; `auto` measures what is fast on this device (see peak.choose_dtype)."""
    if name == "auto":
        return choose_dtype(device, torch.get_num_threads())
    return resolve_dtype(name)


def _build_model(config: TrainConfig, data: Any, session: Session) -> tuple[nn.Module, Any]:
    source = config.init.from_
    if source is None or session.resume_dir is not None:
        # A resumed run gets its weights from its own checkpoint; its saved config already
        # holds the source's model config.
        return build_model(config.model, data.vocab_size), config
    from lmforge.run.rundir import load_run

    loaded = load_run(source, config.init.checkpoint, device="cpu")
    if loaded.tokenizer.hash != data.tokenizer.hash:
        raise ConfigError(
            f"data={config.data} was tokenized differently from init.from={source}; prepare the "
            f"data with the run's tokenizer (tokenizer.kind=file tokenizer.path={source})"
        )
    log.info("starting from %s (%s, step %d)", source, loaded.checkpoint_dir.name, loaded.step)
    if "model" in config.model_fields_set and config.model != loaded.model_config:
        log.warning("warning: model.* keys are ignored with init.from; the model is %s's", source)
    config = config.model_copy(update={"model": loaded.model_config})
    return loaded.model.train(), config


def _check_context(config: TrainConfig, model: nn.Module) -> None:
    context = model.max_context
    if context is not None and config.seq_len > context:
        raise ConfigError(
            f"train.seq_len={config.seq_len} exceeds the model's context "
            f"(model.max_seq_len={context}); lower train.seq_len or raise model.max_seq_len"
        )


def accum_steps(config: TrainConfig, world_size: int) -> int:
    """Micro-steps per optimizer step so that a step sees `train.batch_tokens` tokens."""
    per_pass = config.train.batch_size * config.seq_len * world_size
    target = config.train.batch_tokens
    if target is None:
        return 1
    if target % per_pass:
        raise ConfigError(
            f"train.batch_tokens={target} is not a multiple of batch_size*seq_len*ranks = "
            f"{per_pass}; choose a multiple of {per_pass}"
        )
    return target // per_pass


def _build_loaders(
    config: TrainConfig, data: Any, env: DistEnv
) -> tuple[TokenLoader, TokenLoader | None]:
    accum = accum_steps(config, env.world_size)
    common = {
        "seq_len": config.seq_len,
        "batch_size": config.train.batch_size,
        "accum_steps": accum,
        "world_size": env.world_size,
        "rank": env.rank,
    }
    train = TokenLoader(
        data.shards("train"), seed=config.seed, sequential=config.sequential, **common
    )
    if "val" not in data.splits:
        log.warning("warning: %s has no val split; training without validation", config.data)
        return train, None
    try:
        val = TokenLoader(data.shards("val"), sequential=True, split="val", **common)
    except DataError as exc:
        log.warning("warning: no validation: %s", exc)
        return train, None
    return train, val
