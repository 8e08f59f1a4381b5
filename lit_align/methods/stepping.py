"""Optimizer steps that survive bad numbers: skip a step whose loss or gradient is not finite
(the decision reduced over ranks), cooperate with fp16's GradScaler, count skipped steps so
that ``max_steps`` still ends a run, and stop after ``max_bad_steps`` bad steps in a row.

:class:`GuardedSteps` is a mixin of :class:`lit_align.methods.base.BasePolicyModule` (manual
optimization): a method calls :meth:`GuardedSteps.backward_if_finite` per minibatch and
:meth:`GuardedSteps.optimizer_step_guarded` once per update.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from lit_align import distributed


class GuardedSteps:
    """Backward, check, clip and step (mixed into a LightningModule with manual optimization)."""

    def backward_if_finite(self, loss: Tensor) -> None:
        """Backward a finite loss; a non-finite one marks the step bad. With several processes every
        rank runs the backward anyway (the gradient all-reduce is collective) and the bad step is
        then skipped on all ranks (:meth:`optimizer_step_guarded` reduces the decision)."""
        finite = bool(torch.isfinite(loss))
        if not finite:
            self.bad_steps_in_batch = True
        if finite or distributed.world_size(self._trainer) > 1:
            self.backwards_this_step = getattr(self, "backwards_this_step", 0) + 1
            if self.backwards_this_step > 1 and getattr(self, "one_backward_per_step", False):
                raise distributed.UnsupportedStrategyError(distributed.ZERO3_ONE_BACKWARD)
            self.manual_backward(loss)

    def optimizer_step_guarded(self) -> bool:
        """Clip, check for non-finite gradients, step. A bad step is skipped and counted."""
        opt = self.optimizers()
        sched = self.lr_schedulers()
        self.backwards_this_step = 0
        self.steps_without_signal = 0  # this step has a gradient signal (finite or not)
        bad = getattr(self, "bad_steps_in_batch", False)
        self.bad_steps_in_batch = False
        scaler = self.grad_scaler()
        if not bad and scaler is None:  # under a GradScaler the gradients are still scaled: see on_before_optimizer_step
            bad = not grads_finite(self.optimized_parameters())
        bad = distributed.any_rank(self._trainer, bad)  # every rank skips, or none
        if bad:
            opt.zero_grad(set_to_none=True)
            self._count_bad_step("steps had a non-finite loss or gradient",
                                 "Lower the learning rate, check the scorers, or use fp32 precision.")
            self.skip_step()
            return False
        if scaler is None:
            self.bad_steps = 0
            self.clip_grad_norm(opt)
        with self.timer("optimizer"):
            opt.step()  # under a GradScaler: unscale, on_before_optimizer_step, step unless inf/NaN, update the scale
            opt.zero_grad(set_to_none=True)
        if sched is not None:
            sched.step()
        return not getattr(self, "scaler_skipped", False)

    def grad_scaler(self):
        """The trainer's GradScaler (``16-mixed`` on a GPU), or None."""
        trainer = self._trainer
        return None if trainer is None else getattr(trainer.precision_plugin, "scaler", None)

    def on_before_optimizer_step(self, optimizer) -> None:
        """Under a GradScaler, the gradients are unscaled only here (inside ``opt.step()``): clip them
        here, and count a step whose gradients overflowed. The scaler itself then skips the update
        and lowers its scale (normal during the first steps of fp16 training); a run of
        ``max_bad_steps`` such steps in a row stops it like any non-finite gradient."""
        self.scaler_skipped = False
        if self.grad_scaler() is None:
            return
        if distributed.any_rank(self._trainer, not grads_finite(self.optimized_parameters())):
            self.scaler_skipped = True
            self.skipped_steps += 1
            self._count_bad_step("fp16 steps overflowed although the GradScaler lowered its scale",
                                 "Lower the learning rate, or use bf16-mixed or fp32 precision.")
            return
        self.bad_steps = 0
        self.clip_grad_norm(optimizer)

    def clip_grad_norm(self, optimizer) -> None:
        """Clip the global gradient norm to ``max_grad_norm``. Under FSDP the norm spans every
        rank's shards (:func:`lit_align.distributed.clip_sharded_grad_norm_`; Lightning's clipping
        refuses 'norm' there, and FSDP's own needs the root unit idle, which it is not inside the
        training step); under DeepSpeed the engine clips (its ``gradient_clipping``, set from ours)."""
        max_norm = self.hparams.max_grad_norm
        if not max_norm:
            return
        if distributed.strategy_is(self._trainer, "FSDPStrategy"):
            distributed.clip_sharded_grad_norm_(self.optimized_parameters(), max_norm, self._trainer)
        else:
            self.clip_gradients(optimizer, gradient_clip_val=max_norm, gradient_clip_algorithm="norm")

    def _count_bad_step(self, what: str, advice: str) -> None:
        """One more bad step in a row; ``max_bad_steps`` of them stop the run."""
        self.bad_steps += 1
        if self.bad_steps >= self.hparams.max_bad_steps:
            raise FloatingPointError(f"{self.bad_steps} consecutive {what}; stopping. {advice}")

    def skip_step_without_signal(self, why: str) -> None:
        """Skip a step that has no gradient signal (warned once, counted; an error after
        ``max_steps_without_signal`` such steps in a row, instead of silent zero updates forever)."""
        self.steps_without_signal += 1
        limit = self.hparams.get("max_steps_without_signal")
        warn_once(f"{why}; skipping the gradient until there is a signal")
        if limit is not None and self.steps_without_signal >= limit:
            raise FloatingPointError(
                f"{why} for {self.steps_without_signal} steps in a row (max_steps_without_signal={limit}); stopping. "
                "The target is too rare for the base model: use more samples per step (n_samples), a less strict "
                "constraint, or a smoothed pointwise target (Pointwise(scorer, epsilon=...))."
            )
        self.skip_step()

    def skip_step(self) -> None:
        """Count a training step that applies no update, so that ``max_steps`` still ends the run.

        (Calling ``optimizer.step()`` without gradients would fail under a GradScaler.)
        """
        self.skipped_steps += 1
        self.backwards_this_step = 0
        self.optimizers().zero_grad(set_to_none=True)
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        progress.increment_ready()
        progress.increment_completed()

    def count_updates_as_one_step(self, n_updates: int) -> None:
        """Make ``n_updates`` optimizer steps (or skipped steps) of one training step count as a
        single step of ``trainer.global_step``, so that ``max_steps`` counts rollouts for methods
        that update several times per batch (PPO epochs × minibatches), as for the others."""
        extra = int(n_updates) - 1
        if extra <= 0 or self._trainer is None:
            return
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        for tracker in (progress.total, progress.current):
            tracker.ready -= extra
            tracker.completed -= extra


def warn_once(message: str, _seen: set = set()) -> None:  # noqa: B006 - intentional module cache
    if message not in _seen:
        _seen.add(message)
        warnings.warn(message, stacklevel=2)


def grads_finite(params) -> bool:
    """Whether every gradient is finite: one norm pass over all of them (inf/NaN — or values so
    large that the norm overflows — make it non-finite), ~10× faster than an elementwise
    isfinite per tensor on a 135M-parameter model."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch ≥ 2.6
        total = torch.nn.utils.get_total_norm(grads, error_if_nonfinite=False)
    else:
        total = torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]).sum()
    return bool(torch.isfinite(total))

