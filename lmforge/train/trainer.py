"""`lmforge train`: the training loop, readable top to bottom.

batch -> forward under autocast -> loss / accum -> backward (no gradient sync except on the last
micro-step) -> clip -> step -> schedule -> log; between steps: evaluate, sample, checkpoint. Setup
(run dir rules, data, model, optimizer, resume) is `build_trainer`; `Trainer.fit` is the loop.
Fine-tuning reuses `Trainer` with its own batch source. Reference: nanoGPT `train.py`.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from torch import nn

from lmforge.config import save_config
from lmforge.data.loader import TokenLoader
from lmforge.run import checkpoint as ckpt
from lmforge.run import rundir
from lmforge.run.config import TrainConfig
from lmforge.runtime import autocast, malloc_tuning_hint, resolve_device
from lmforge.train import distributed as dist_utils
from lmforge.train.console import TrainDisplay, format_stats
from lmforge.train.evaluate import byte_lengths, sample_text, validation_loss
from lmforge.train.loss import cross_entropy
from lmforge.train.metrics import (
    JsonlSink,
    MetricsSink,
    MultiSink,
    NullSink,
    TensorBoardSink,
    plot_losses,
    truncate_metrics,
)
from lmforge.train.peak import peak_tflops
from lmforge.train.schedule import lr_factor, set_lr
from lmforge.train.session import Session, prepare_out_dir, resolve_session
from lmforge.train.setup import build_components
from lmforge.train.signals import StopRequest
from lmforge.train.state import (
    Checkpointable,
    OptimizerWithScaler,
    TrainState,
    restore_training_state,
    save_training_checkpoint,
)
from lmforge.verb import Flags, Verb

log = logging.getLogger(__name__)


class Trainer:
    """Owns one run: the (wrapped) model, optimizer, loaders, counters and output sinks."""

    def __init__(
        self,
        config: TrainConfig,
        out: Path,
        model: nn.Module,
        optimizer,  # noqa: ANN001 - torch optimizer or MuonAdamW
        train_loader: TokenLoader,
        val_loader: TokenLoader | None,
        tokenizer,  # noqa: ANN001 - lmforge.data.tokenizer.Tokenizer
        device: torch.device,
        env: dist_utils.DistEnv,
        state: TrainState | None = None,
        dtype: torch.dtype = torch.float32,
        final_out: Path | None = None,
    ) -> None:
        self.config, self.out, self.model, self.optimizer = config, out, model, optimizer
        # Where the run ends up, for the last log line (fine-tuning trains in a temporary dir).
        self.final_out = final_out or out
        self.train_loader, self.val_loader, self.tokenizer = train_loader, val_loader, tokenizer
        self.device, self.env = device, env
        self.state = state or TrainState()
        self.raw_model = dist_utils.unwrap(model)
        self.dtype = dtype  # resolved (config.dtype may be `auto`)
        self.fsdp = env.enabled and config.train.parallel == "fsdp"
        # An fp16 gradient scaler keeps small gradients representable (GPU only).
        self.scaler = torch.amp.GradScaler(device.type) if self.dtype == torch.float16 else None
        self.recurrent = config.sequential and self.raw_model.max_context is None
        self.carry = None
        if self.recurrent:
            rows = train_loader.batch_size
            self.carry = [
                self.raw_model.init_cache(rows, device=device)
                for _ in range(train_loader.accum_steps)
            ]
        self.tokens_per_step = train_loader.rows * train_loader.seq_len
        self.flops_per_token = self.raw_model.flops_per_token(train_loader.seq_len)
        self.sink: MetricsSink = NullSink()
        self.display = TrainDisplay(config.max_steps, self.state.step, enabled=env.is_main)
        self.peak: float | None = None
        self._peak_refreshed = False
        self._byte_lengths = byte_lengths(tokenizer)
        self._window_start = (0.0, self.state.tokens)
        self._step_time = 0.0  # seconds inside train_step (tokens/s excludes eval and saving)
        self._last_saved = -1

    # -- the loop ---------------------------------------------------------------------------------

    def fit(self) -> int:
        """Train until the step or time budget is spent; returns the process exit code."""
        self._open_sinks()
        self.peak = self._peak_flops()
        stop = StopRequest()
        t0, elapsed0 = time.perf_counter(), self.state.elapsed_s
        try:
            with stop, self.display:
                while not self._done():
                    step_start = time.perf_counter()
                    stats = self.train_step()
                    self._step_time += time.perf_counter() - step_start
                    self.state.elapsed_s = elapsed0 + time.perf_counter() - t0
                    if stats is None and self._too_many_bad_steps():
                        return 1
                    if stats is not None:
                        self._after_step(stats)
                    if dist_utils.any_rank(stop.requested, self.env, self.device):
                        return self._interrupted(stop.exit_code)
                self.state.finished = True
                self._finish()
        finally:
            self.sink.close()
        return 0

    def train_step(self) -> dict[str, float] | None:
        """One optimizer step over `accum_steps` micro-batches; None when it was skipped."""
        batches = self.train_loader.next_batches()
        lr = set_lr(self.optimizer, self._lr_factor())
        total = torch.zeros((), device=self.device)
        last = len(batches) - 1
        for m, (x, y) in enumerate(batches):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            sync = m == last
            with dist_utils.gradient_sync(self.model, self.env, self.config.train.parallel, sync):
                with autocast(self.device, self.dtype):
                    logits = self.model(x, cache=self.carry[m] if self.carry else None)
                loss = cross_entropy(logits, y)
                # Scale so accumulated gradients are those of the mean over the global batch.
                scaled = loss / len(batches)
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            if self.carry:
                self.carry[m].detach_()  # truncated BPTT: the next window starts from here
            total += loss.detach()
        total = dist_utils.all_reduce_mean(total / len(batches), self.env)
        loss_value = total.item()
        grad_norm = self._clip_gradients()
        if not math.isfinite(loss_value) or (self.scaler is None and not math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            return self._skip(loss_value)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        # Tokens computed, pads included: SFT batches are as wide as their longest row, so this
        # is less than the nominal tokens_per_step (rows x longest example).
        self.state.tokens += sum(x.numel() for x, _ in batches) * self.env.world_size
        self.state.bad_steps = 0
        return {"loss": loss_value, "lr": lr, "grad_norm": grad_norm}

    def _clip_gradients(self) -> float:
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = self.config.train.grad_clip or math.inf
        norm = torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
        if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor
            norm = norm.full_tensor()
        return float(norm)

    def _lr_factor(self) -> float:
        sched = self.config.schedule
        return lr_factor(
            sched.kind,
            self.state.step,
            self._progress(),
            sched.warmup_steps,
            sched.min_lr_ratio,
            sched.decay_frac,
        )

    def _progress(self) -> float:
        """Fraction of the budget spent: steps / max_steps or time / max_time, whichever is
        further along (the run ends when either is spent, so the schedule follows that one)."""
        fractions = [0.0]
        if self.config.max_steps is not None:
            fractions.append(self.state.step / self.config.max_steps)
        if self.config.train.max_time is not None:
            fractions.append(self.state.elapsed_s / self.config.train.max_time)
        return max(fractions)

    def _done(self) -> bool:
        max_steps, max_time = self.config.max_steps, self.config.train.max_time
        if max_steps is not None and self.state.step >= max_steps:
            return True
        if max_time is None:
            return False
        # Ranks must agree on when the time runs out; rank 0's clock decides.
        spent = self.state.elapsed_s >= max_time
        return bool(dist_utils.broadcast_object(spent, self.env))

    # -- between steps ----------------------------------------------------------------------------

    def _after_step(self, stats: dict[str, float]) -> None:
        step, cfg = self.state.step, self.config
        self.display.update(step, stats, self._display_total())
        if step % cfg.train.log_every == 0 or step == cfg.max_steps:
            self._log_train_row(stats)
        improved = False
        if self.val_loader is not None and step % cfg.eval.every == 0:
            improved = self._evaluate()
        if cfg.sample_every and step % cfg.sample_every == 0:
            self._sample()
        if step % cfg.checkpoint_every == 0 or improved:
            self._save(best=improved)

    def _log_train_row(self, stats: dict[str, float]) -> None:
        start, start_tokens = self._window_start
        self._window_start = (self._step_time, self.state.tokens)
        tokens = self.state.tokens - start_tokens
        tokens_per_s = tokens / max(self._step_time - start, 1e-9)
        row = {"step": self.state.step, **stats, "tokens_per_s": tokens_per_s}
        if self.peak:
            row["mfu"] = self._mfu(tokens_per_s)
        row["tokens"] = self.state.tokens
        row["elapsed_s"] = round(self.state.elapsed_s, 3)
        self.sink.log(row)
        if self.state.step % self.config.train.print_every < self.config.train.log_every:
            self.display.message(f"step {self.state.step}: {format_stats(row)}")

    def _evaluate(self) -> bool:
        """Validation loss now; True when it is the best so far."""
        eval_model = self.model if self.fsdp else self.raw_model
        result = validation_loss(
            eval_model,
            self.val_loader,
            self.config.eval.batches,
            autocast(self.device, self.dtype),
            self.env,
            self.recurrent,
            self._byte_lengths,
        )
        self.sink.log({"step": self.state.step, **result})
        best = self.state.best_val
        improved = best is None or result["val_loss"] < best
        if improved:
            self.state.best_val = result["val_loss"]
        self.display.message(
            f"step {self.state.step}: val_loss {result['val_loss']:.4f}"
            + (f"  val_bpb {result['val_bpb']:.4f}" if "val_bpb" in result else "")
        )
        if self.env.is_main:
            plot_losses(self.out / rundir.METRICS_FILE, self.out / rundir.PLOTS_DIR / "loss.png")
        return improved

    def _sample(self) -> None:
        # Under FSDP every rank must run the forward passes (they all-gather weights).
        if not (self.env.is_main or self.fsdp):
            return
        model = self.model if self.fsdp else self.raw_model
        seed = self.config.seed + self.state.step
        text = sample_text(
            model, self.tokenizer, self.config.sample, seed, autocast(self.device, self.dtype)
        )
        if self.env.is_main:
            with open(self.out / rundir.SAMPLES_FILE, "a", encoding="utf-8") as f:
                f.write(f"=== step {self.state.step} ===\n{text}\n\n")
            self.display.message(f"sample at step {self.state.step}: {text[:200]!r}")

    def _save(self, best: bool = False) -> None:
        if self._last_saved == self.state.step:
            return
        root = self.out / rundir.CHECKPOINTS_DIR
        path = save_training_checkpoint(
            root, self._checkpointable(), self.state, self.train_loader.state_dict()
        )
        self._last_saved = self.state.step
        if self.env.is_main and path is not None:
            if best:
                ckpt.set_pointer(root, ckpt.BEST, path)
            ckpt.prune_checkpoints(root, self.config.checkpoint.keep_last)

    def _optimizer_state_holder(self):  # noqa: ANN202
        """The optimizer, with the fp16 scaler's state riding along in `optimizer.pt`."""
        if self.scaler is None or self.fsdp:
            return self.optimizer
        return OptimizerWithScaler(self.optimizer, self.scaler)

    def _finish(self) -> None:
        step = self.state.step
        if self.val_loader is not None and step % self.config.eval.every != 0:
            improved = self._evaluate()
        else:
            improved = False
        sample_every = self.config.sample_every
        if sample_every and step % sample_every != 0:
            self._sample()
        self._last_saved = -1  # always rewrite the final checkpoint with finished=True
        self._save(best=improved)
        if self.env.is_main:
            plot_losses(self.out / rundir.METRICS_FILE, self.out / rundir.PLOTS_DIR / "loss.png")
            best = f", best val_loss {self.state.best_val:.4f}" if self.state.best_val else ""
            print(
                f"trained {step} steps ({self.state.tokens:,} tokens) in "
                f"{self.state.elapsed_s:.1f} s{best}; run dir: {self.final_out}"
            )

    def _interrupted(self, code: int) -> int:
        self._save()
        if self.env.is_main:
            log.warning(
                "interrupted at step %d; checkpoint saved. Resume with: lmforge train --resume %s",
                self.state.step,
                self.out,
            )
        return code

    def _skip(self, loss_value: float) -> None:
        self.state.bad_steps += 1
        log.warning(
            "warning: non-finite loss (%s) at step %d; step skipped (%d in a row)",
            loss_value,
            self.state.step + 1,
            self.state.bad_steps,
        )
        self.sink.log({"step": self.state.step, "loss": loss_value, "skipped": 1})
        return None

    def _too_many_bad_steps(self) -> bool:
        limit = self.config.train.max_bad_steps
        if self.state.bad_steps < limit:
            return False
        latest = ckpt.read_pointer(self.out / rundir.CHECKPOINTS_DIR, ckpt.LATEST)
        log.error(
            "error: %d non-finite losses in a row at step %d; stopping. The last good checkpoint "
            "(%s) is intact; lower optim.lr, enable train.grad_clip or use dtype=float32",
            limit,
            self.state.step,
            latest or "none",
        )
        return True

    # -- helpers ----------------------------------------------------------------------------------

    def _checkpointable(self) -> Checkpointable:
        """Everything a checkpoint saves and a resume restores, in one place for both."""
        return Checkpointable(
            self.model,
            self.raw_model.config,
            self._optimizer_state_holder(),
            self.train_loader,
            self.carry,
            self.env,
            self.config.train.parallel,
        )

    def restore(self, checkpoint_dir: Path) -> None:
        """Optimizer, loader position, RNG and carried state from `checkpoint_dir`."""
        restore_training_state(checkpoint_dir, self._checkpointable(), self.device)
        loader_state = ckpt.verify_checkpoint(checkpoint_dir, checksums=False).get("loader")
        if loader_state:
            self.train_loader.load_state_dict(loader_state)
        self._last_saved = self.state.step
        self._window_start = (self._step_time, self.state.tokens)
        self.display = TrainDisplay(self.config.max_steps, self.state.step, self.env.is_main)

    def _open_sinks(self) -> None:
        if not self.env.is_main:
            return
        truncate_metrics(self.out / rundir.METRICS_FILE, self.state.step)
        sinks: list[MetricsSink] = [JsonlSink(self.out / rundir.METRICS_FILE)]
        if self.config.train.tensorboard:
            purge = self.state.step + 1 if self.state.step else None
            sinks.append(TensorBoardSink(self.out / rundir.TB_DIR, purge_step=purge))
        self.sink = MultiSink(sinks)

    def _peak_flops(self) -> float | None:
        if self.config.train.peak_tflops is not None:
            return self.config.train.peak_tflops
        if not self.env.is_main:
            return None
        return peak_tflops(self.device, self.dtype, torch.get_num_threads())

    def _mfu(self, tokens_per_s: float) -> float:
        mfu = self.flops_per_token * tokens_per_s / (self.peak * 1e12 * self.env.world_size)
        if mfu > 1.0 and self.config.train.peak_tflops is None and not self._peak_refreshed:
            # Over 100%: the cached peak was measured on a busy machine; measure it again.
            self._peak_refreshed = True
            self.peak = peak_tflops(self.device, self.dtype, torch.get_num_threads(), True)
            return self._mfu(tokens_per_s)
        return mfu

    def _display_total(self) -> int | None:
        if self.config.max_steps is not None:
            return self.config.max_steps
        progress = self._progress()
        return int(self.state.step / progress) if progress > 0 else None


# -- the verb -------------------------------------------------------------------------------------


def run(config: TrainConfig, flags: Flags) -> int:
    """`lmforge train`: start, overwrite or resume the run dir `config.out`; returns exit code."""
    env = dist_utils.detect()
    if not env.is_main:
        logging.getLogger("lmforge").setLevel(logging.WARNING)  # rank 0 speaks for all
    session = resolve_session(config, flags)
    if session.finished_message:
        print(session.finished_message)
        return 0
    device = dist_utils.init(env, resolve_device(session.config.device))
    lock = None
    try:
        if env.is_main:
            lock = prepare_out_dir(session, flags)
        dist_utils.barrier(env)
        parts = build_components(session, env, device)
        trainer = Trainer(
            parts.config,
            session.out,
            parts.model,
            parts.optimizer,
            parts.train_loader,
            parts.val_loader,
            parts.tokenizer,
            device,
            env,
            parts.state,
            parts.dtype,
        )
        if session.resume_dir is not None:
            trainer.restore(session.resume_dir)
        if env.is_main:
            _write_run_files(trainer, session, flags)
        return trainer.fit()
    finally:
        if lock is not None:
            lock.release()
        dist_utils.shutdown(env)


def _write_run_files(trainer: Trainer, session: Session, flags: Flags) -> None:
    out = session.out
    save_config(trainer.config, out / rundir.CONFIG_FILE)
    trainer.tokenizer.save(out / rundir.TOKENIZER_FILE)
    extra = {
        "world_size": trainer.env.world_size,
        "threads": torch.get_num_threads(),
        "dtype": str(trainer.dtype).removeprefix("torch."),
        "num_params": trainer.raw_model.num_params(),
    }
    if session.resume_dir is not None:
        extra["resumed_from"] = session.resume_dir.name
    rundir.write_run_info(out, flags.argv or None, str(trainer.device), extra)
    log.info(
        "%s %s: %s parameters, %d tokens/step (%d micro-steps of %dx%d x %d ranks), data %s",
        "resuming" if session.resume_dir else "training",
        out,
        f"{trainer.raw_model.num_params():,}",
        trainer.tokens_per_step,
        trainer.train_loader.accum_steps,
        trainer.train_loader.batch_size,
        trainer.train_loader.seq_len,
        trainer.env.world_size,
        trainer.config.data,
    )
    untuned = trainer.device.type == "cpu" and not trainer.config.train.tune_malloc
    hint = malloc_tuning_hint() if untuned else None
    if hint:
        log.info(hint)


VERB = Verb(
    name="train",
    summary="Train a language model on a data dir; writes (or resumes) the run dir `out`.",
    config=TrainConfig,
    run=run,
    positionals=("out",),
    usage="lmforge train [RECIPE.toml] [OUT] data=DATA_DIR [key=value ...] [--resume|--overwrite]",
    flags=("--resume", "--overwrite", "--debug", "--help"),
)
