"""`lmforge train`: the training loop, readable top to bottom.

batch -> forward under autocast -> loss / accum -> backward (no gradient sync except on the last
micro-step) -> clip -> step -> schedule -> log; between steps: evaluate, sample, checkpoint. Setup
(run dir rules, data, model, optimizer, resume) is `setup.build_components`; `Trainer.fit` is the
loop. What a batch holds and what is minimised come from `Components` (`interface.py`): a batch
source and an objective, so SFT and classifier fine-tuning share this loop, its checkpoints,
resume, signals and metrics. Reference: nanoGPT `train.py`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shlex
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lmforge.config import save_config
from lmforge.models.gpt import math_attention
from lmforge.run import checkpoint as ckpt
from lmforge.run import rundir
from lmforge.run.config import TrainConfig
from lmforge.runtime import autocast, malloc_tuning_hint, resolve_device
from lmforge.train import autocompile
from lmforge.train import distributed as dist_utils
from lmforge.train.attention_kernel import choose_attention_kernel
from lmforge.train.console import TrainDisplay, format_stats
from lmforge.train.evaluate import byte_lengths, sample_text
from lmforge.train.interface import Components, LanguageModelObjective, Validation
from lmforge.train.kernels import choose_linear_kernel, linear_kernel_mode
from lmforge.train.metrics import (
    JsonlSink,
    MetricsSink,
    MultiSink,
    NullSink,
    TensorBoardSink,
    plot_losses,
    truncate_metrics,
)
from lmforge.train.peak import (
    cpu_flags,
    describe_peaks,
    device_name,
    machine_peaks,
    peak_tflops,
)
from lmforge.train.schedule import lr_factor, set_lr
from lmforge.train.session import Session, prepare_out_dir, resolve_session
from lmforge.train.setup import build_components
from lmforge.train.signals import StopRequest
from lmforge.train.state import (
    Checkpointable,
    OptimizerWithScaler,
    restore_training_state,
    save_training_checkpoint,
)
from lmforge.verb import Flags

log = logging.getLogger(__name__)


class Trainer:
    """Owns one run: the (wrapped) model, optimizer, batch sources, counters and output sinks.

    `out` is the directory it writes (metrics, checkpoints, plots); `final_out` is where the run
    ends up, for the last log line (fine-tuning trains in a partial dir and publishes it after);
    `resume_hint` is the command printed after an interruption (default: `lmforge train --resume
    OUT`).
    """

    def __init__(
        self,
        parts: Components,
        out: Path,
        env: dist_utils.DistEnv | None = None,
        final_out: Path | None = None,
        resume_hint: str | None = None,
    ) -> None:
        config, device, env = parts.config, parts.device, env or dist_utils.DistEnv()
        self.config, self.out, self.final_out = config, Path(out), Path(final_out or out)
        self.resume_hint = resume_hint or f"lmforge train --resume {shlex.quote(str(out))}"
        self.model, self.optimizer, self.tokenizer = parts.model, parts.optimizer, parts.tokenizer
        self.train_batches, self.val_batches = parts.train_batches, parts.val_batches
        self.objective = parts.objective or LanguageModelObjective(byte_lengths(parts.tokenizer))
        self.device, self.env, self.state = device, env, parts.state
        self.raw_model = dist_utils.unwrap(parts.model)
        self.dtype = parts.dtype  # resolved (config.dtype may be `auto`)
        self.fsdp = env.enabled and config.train.parallel == "fsdp"
        # An fp16 gradient scaler keeps small gradients representable (GPU only).
        self.scaler = torch.amp.GradScaler(device.type) if self.dtype == torch.float16 else None
        self.recurrent = config.sequential and self.raw_model.max_context is None
        self.carry = None
        source = self.train_batches
        if self.recurrent:
            self.carry = [
                self.raw_model.init_cache(source.batch_size, device=device)
                for _ in range(source.accum_steps)
            ]
        self.tokens_per_step = source.rows * source.seq_len
        self.flops_per_token = self.raw_model.flops_per_token(source.seq_len)
        self.sink: MetricsSink = NullSink()
        self.display = TrainDisplay(config.max_steps, self.state.step, enabled=env.is_main)
        self.peak: float | None = None
        self._peak_refreshed = False
        self._window_start = (0.0, self.state.tokens)
        self._step_time = 0.0  # seconds inside train_step (tokens/s excludes eval and saving)
        self._last_saved = -1
        self.linear_kernel = self._choose_linear_kernel(config.train.linear_kernel)
        self.attention_kernel = self._choose_attention_kernel(config.train.attention_kernel)
        self._step_durations: list[float] = []
        self.compile_record: dict[str, Any] = {"setting": config.compile}
        self._compile_phase = self._compile_plan(config.compile, parts)

    # -- the loop ---------------------------------------------------------------------------------

    def fit(self) -> int:
        """Train until the step or time budget is spent; returns the process exit code."""
        self._open_sinks()
        self.peak = self._peak_flops()
        stop = StopRequest()
        t0, elapsed0 = time.perf_counter(), self.state.elapsed_s
        try:
            with stop, self.display:
                while (reason := self._stop_reason()) is None:
                    step_start = time.perf_counter()
                    stats = self.train_step()
                    duration = time.perf_counter() - step_start
                    # Compiling is reported apart (run_info.json), not as slow training.
                    self._step_time += duration - self._track_compile(duration)
                    self.state.elapsed_s = elapsed0 + time.perf_counter() - t0
                    if stats is None and self._too_many_bad_steps():
                        return 1
                    if stats is not None:
                        self._after_step(stats)
                    if dist_utils.any_rank(stop.requested, self.env, self.device):
                        return self._interrupted(stop.exit_code)
                self.state.finished, self.state.stopped = True, reason
                self._finish()
        finally:
            self.sink.close()
        return 0

    def train_step(self) -> dict[str, float] | None:
        """One optimizer step over `accum_steps` micro-batches; None when it was skipped."""
        objective = self.objective
        batches = self.train_batches.next_batches()
        lr = set_lr(self.optimizer, self._lr_factor())
        total = torch.zeros((), device=self.device)
        tokens, last = 0, len(batches) - 1
        for m, batch in enumerate(batches):
            tokens += objective.tokens(batch)
            batch = objective.to_device(batch, self.device)
            sync = m == last
            with dist_utils.gradient_sync(self.model, self.env, self.config.train.parallel, sync):
                with (
                    autocast(self.device, self.dtype),
                    self._linear_kernel(),
                    math_attention(self.attention_kernel == "math"),
                ):
                    output = objective.forward(
                        self.model, batch, self.carry[m] if self.carry else None
                    )
                loss = objective.loss(output, batch)
                # Scale so accumulated gradients are those of the mean over the global batch.
                scaled = loss / len(batches)
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            if self.carry:
                self.carry[m].detach_()  # truncated BPTT: the next window starts from here
            total += loss.detach()
        total = dist_utils.all_reduce_mean(total / len(batches), self.env)
        norm = self._clip_gradients()
        # The step's one device-to-host read (loss and norm together): skipping a non-finite
        # step must be decided before the optimizer sees its gradients.
        loss_value, grad_norm = torch.stack([total.float(), norm.float()]).tolist()
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
        self.state.tokens += tokens * self.env.world_size
        self.state.bad_steps = 0
        return {"loss": loss_value, "lr": lr, "grad_norm": grad_norm}

    def _clip_gradients(self) -> torch.Tensor:
        """Clip to `train.grad_clip`; the global norm before clipping, left on the device."""
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = self.config.train.grad_clip or math.inf
        norm = torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
        if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor
            norm = norm.full_tensor()
        return norm

    def _choose_linear_kernel(self, setting: str) -> str:
        threads = torch.get_num_threads()
        return self._same_on_every_rank(
            setting, lambda: choose_linear_kernel(setting, self.device, self.dtype, threads)
        )

    def _choose_attention_kernel(self, setting: str) -> str:
        source = self.train_batches
        return self._same_on_every_rank(
            setting,
            lambda: choose_attention_kernel(
                setting,
                self.raw_model,
                self.device,
                self.dtype,
                source.batch_size,  # rows of one forward (rows = all micro-batches, ranks)
                source.seq_len,
                torch.get_num_threads(),
            ),
        )

    def _same_on_every_rank(self, setting: str, choose: Callable[[], str]) -> str:
        """`choose()` here, except that a measured (`auto`) choice of a distributed run is rank
        0's, broadcast: ranks must run the same kernels."""
        if setting != "auto" or not self.env.enabled:
            return choose()
        choice = choose() if self.env.is_main else None
        return str(dist_utils.broadcast_object(choice, self.env))

    def _uncompiled(self) -> torch.nn.Module:
        """The (DDP/FSDP-wrapped) model without torch.compile's wrapper: checkpoints keep their
        keys, and evaluation does not compile a second, no-grad graph."""
        return getattr(self.model, "_orig_mod", self.model)

    def _linear_kernel(self) -> contextlib.AbstractContextManager:
        return linear_kernel_mode(self.linear_kernel) or contextlib.nullcontext()

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

    def _stop_reason(self) -> str | None:
        """Why the run stops now (`steps`, `patience` or `time`), or None to go on. Checked
        after every step, so a budget is overrun by at most one step."""
        max_steps, max_time = self.config.max_steps, self.config.train.max_time
        if max_steps is not None and self.state.step >= max_steps:
            return "steps"
        patience = self.config.eval.patience
        if patience is not None and self.state.evals_since_best >= patience:
            return "patience"  # every rank saw the same (all-reduced) validation results
        if max_time is None:
            return None
        # Ranks must agree on when the time runs out; rank 0's clock decides.
        spent = self.state.elapsed_s >= max_time
        return "time" if dist_utils.broadcast_object(spent, self.env) else None

    # -- compile=auto -----------------------------------------------------------------------------

    def _compile_plan(self, setting: bool | str, parts: Components) -> str:
        """`deciding` when compile=auto is to be decided after a few steps, else `off`; the
        record for run_info.json says why."""
        record = self.compile_record
        if setting is True or setting is False:
            record.update(compile=setting, reason=f"compile={str(setting).lower()}")
            return "off"
        if parts.objective is not None:
            # Fine-tuning batches vary in width (a recompile each): eager unless compile=true.
            record.update(compile=False, reason="fine-tuning: compile=auto stays eager")
            return "off"
        if self.device.type == "cpu" and not autocompile.compiler_available():
            record.update(compile=False, reason="no C++ compiler for inductor")
            return "off"
        return "deciding"

    def _compile_key(self) -> str:
        model_config = self.raw_model.config
        source = self.train_batches
        return autocompile.signature(
            {
                "model": model_config.model_dump(mode="json")
                if hasattr(model_config, "model_dump")
                else repr(model_config),
                "batch_size": source.batch_size,
                "seq_len": source.seq_len,
                "accum_steps": source.accum_steps,
                "dtype": str(self.dtype),
                "linear_kernel": self.linear_kernel,
                "attention_kernel": self.attention_kernel,
                "world_size": self.env.world_size,
                "parallel": self.config.train.parallel,
            }
        )

    def _track_compile(self, duration: float) -> float:
        """compile=auto's bookkeeping after a step of `duration` s; returns the seconds of it
        spent compiling (excluded from tokens/s)."""
        phase = self._compile_phase
        if phase == "off":
            return 0.0
        self._step_durations.append(duration)
        if phase == "deciding" and len(self._step_durations) >= autocompile.DECIDE_AFTER:
            self._decide_compile()
        elif phase == "compiling":
            eager = self.compile_record["eager_step_s"]
            compile_s = max(duration - eager, 0.0)
            self.compile_record["compile_s"] = round(compile_s, 3)
            self._compile_phase, self._step_durations = "timing", []
            return compile_s
        elif phase == "timing" and len(self._step_durations) >= autocompile.MEASURE_STEPS:
            self._finish_compile_measurement()
        return 0.0

    def _decide_compile(self) -> None:
        eager = statistics.median(self._step_durations[1:])  # step 1 warms up
        cfg = self.config
        remaining = autocompile.remaining_eager_seconds(
            self.state.step, cfg.max_steps, self.state.elapsed_s, cfg.train.max_time, eager
        )
        threads = torch.get_num_threads()
        estimate = autocompile.load_estimate(self._compile_key(), threads)
        decision = autocompile.decide(eager, remaining, estimate)
        decision = dist_utils.broadcast_object(decision, self.env)  # every rank alike
        assert isinstance(decision, autocompile.CompileDecision)
        self.compile_record.update(decision.record(), decided_at_step=self.state.step)
        log.info(
            "compile=auto: %s (%s)", "compiling" if decision.compile else "eager", decision.reason
        )
        self._compile_phase = "compiling" if decision.compile else "off"
        if decision.compile:
            self.model = torch.compile(self.model)
        self._write_compile_record()

    def _finish_compile_measurement(self) -> None:
        record = self.compile_record
        compiled = statistics.median(self._step_durations)
        speedup = record["eager_step_s"] / compiled
        record.update(compiled_step_s=round(compiled, 6), measured_speedup=round(speedup, 4))
        self._compile_phase = "off"
        log.info(
            "compiled in %.1f s; steps %.2fx as fast as eager (%.0f vs %.0f ms)",
            record["compile_s"],
            speedup,
            compiled * 1e3,
            record["eager_step_s"] * 1e3,
        )
        if speedup < 1.0:
            # Measured slower than eager (it happens: bf16 on some CPUs): the rest of the run
            # goes back to eager, and the cached speedup keeps later runs from compiling.
            self.model = self._uncompiled()
            record["reverted_to_eager"] = True
            log.info("compiled steps are slower than eager here: back to eager")
        if self.env.is_main:
            autocompile.save_measurement(
                self._compile_key(), torch.get_num_threads(), record["compile_s"], speedup
            )
        self._write_compile_record()

    def _write_compile_record(self) -> None:
        """Keep run_info.json's `compile` entry current (the decision comes after start-up)."""
        path = self.out / rundir.RUN_INFO_FILE
        if not self.env.is_main or not path.is_file():
            return
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return
        info["compile"] = self.compile_record
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)

    # -- between steps ----------------------------------------------------------------------------

    def _after_step(self, stats: dict[str, float]) -> None:
        step, cfg = self.state.step, self.config
        self.display.update(step, stats, self._display_total())
        if step % cfg.train.log_every == 0 or step == cfg.max_steps:
            self._log_train_row(stats)
        improved = False
        if self.val_batches is not None and step % cfg.eval.every == 0:
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
        """Validation metrics now; True when the objective's best metric is the best so far."""
        assert self.val_batches is not None
        eval_model = self._uncompiled() if self.fsdp else self.raw_model
        how = Validation(
            self.config.eval.batches, autocast(self.device, self.dtype), self.env, self.recurrent
        )
        result = self.objective.validate(eval_model, self.val_batches, how)
        self.sink.log({"step": self.state.step, **result})
        value, best = result[self.objective.best_metric], self.state.best_val
        if best is None:
            improved = True
        else:
            improved = value > best if self.objective.higher_is_better else value < best
        if improved:
            self.state.best_val, self.state.best_step = value, self.state.step
            self.state.evals_since_best = 0
        else:
            self.state.evals_since_best += 1
        self.display.message(f"step {self.state.step}: {self.objective.describe(result)}")
        if self.env.is_main:
            plot_losses(self.out / rundir.METRICS_FILE, self.out / rundir.PLOTS_DIR / "loss.png")
        return improved

    def _sample(self) -> None:
        # Under FSDP every rank must run the forward passes (they all-gather weights).
        if not (self.env.is_main or self.fsdp):
            return
        model = self._uncompiled() if self.fsdp else self.raw_model
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
            root, self._checkpointable(), self.state, self.train_batches.state_dict()
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
        if self.val_batches is not None and step % self.config.eval.every != 0:
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
            metric, value = self.objective.best_metric, self.state.best_val
            best = f", best {metric} {value:.4f}" if value is not None else ""
            print(
                f"trained {step} steps ({self.state.tokens:,} tokens) in "
                f"{self.state.elapsed_s:.1f} s{best}; run dir: {self.final_out}"
            )

    def _interrupted(self, code: int) -> int:
        self._save()
        if self.env.is_main:
            log.warning(
                "interrupted at step %d; checkpoint saved. Resume with: %s",
                self.state.step,
                self.resume_hint,
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
            self._uncompiled(),
            self.raw_model.config,
            self._optimizer_state_holder(),
            self.train_batches,
            self.carry,
            self.env,
            self.config.train.parallel,
        )

    def restore(self, checkpoint_dir: Path) -> None:
        """Optimizer, batch-source position, RNG and carried state from `checkpoint_dir`
        (the model's weights and `TrainState` are loaded before the Trainer is built)."""
        restore_training_state(checkpoint_dir, self._checkpointable(), self.device)
        loader_state = ckpt.verify_checkpoint(checkpoint_dir, checksums=False).get("loader")
        if loader_state:
            self.train_batches.load_state_dict(loader_state)
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
        trainer = Trainer(build_components(session, env, device), session.out, env)
        if session.resume_dir is not None:
            trainer.restore(session.resume_dir)
        if env.is_main:
            _write_run_files(trainer, session, flags)
        return trainer.fit()
    finally:
        if lock is not None:
            lock.release()
        dist_utils.shutdown(env)


def _machine_picture(trainer: Trainer) -> dict[str, Any]:
    """The CPU's measured matmul peaks (cached per CPU), logged in one line and kept in
    run_info.json, so a run's MFU can be read against what this machine can do."""
    if trainer.device.type != "cpu" or trainer.config.train.peak_tflops is not None:
        return {}
    threads = torch.get_num_threads()
    peaks = machine_peaks(threads)
    log.info("peak TFLOP/s (%d threads): %s", threads, describe_peaks(peaks))
    return {"cpu": {"model": device_name(trainer.device), "flags": cpu_flags()}, "peaks": peaks}


def _write_run_files(trainer: Trainer, session: Session, flags: Flags) -> None:
    out = session.out
    save_config(trainer.config, out / rundir.CONFIG_FILE)
    trainer.tokenizer.save(out / rundir.TOKENIZER_FILE)
    extra = {
        "world_size": trainer.env.world_size,
        "threads": torch.get_num_threads(),
        "dtype": str(trainer.dtype).removeprefix("torch."),
        "num_params": trainer.raw_model.num_params(),
        "linear_kernel": trainer.linear_kernel,
        "attention_kernel": trainer.attention_kernel,
        "compile": trainer.compile_record,
    }
    if session.resume_dir is not None:
        extra["resumed_from"] = session.resume_dir.name
    extra.update(_machine_picture(trainer))
    rundir.write_run_info(out, flags.argv or None, str(trainer.device), extra)
    log.info(
        "%s %s: %s parameters, %d tokens/step (%d micro-steps of %dx%d x %d ranks), data %s",
        "resuming" if session.resume_dir else "training",
        out,
        f"{trainer.raw_model.num_params():,}",
        trainer.tokens_per_step,
        trainer.train_batches.accum_steps,
        trainer.train_batches.batch_size,
        trainer.train_batches.seq_len,
        trainer.env.world_size,
        trainer.config.data,
    )
    log.info(
        "linear layers: %s (train.linear_kernel=%s); attention: %s (train.attention_kernel=%s); "
        "compile=%s",
        trainer.linear_kernel,
        trainer.config.train.linear_kernel,
        trainer.attention_kernel,
        trainer.config.train.attention_kernel,
        str(trainer.config.compile).lower(),
    )
    untuned = trainer.device.type == "cpu" and not trainer.config.train.tune_malloc
    hint = malloc_tuning_hint() if untuned else None
    if hint:
        log.info(hint)
