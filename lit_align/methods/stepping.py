"""Optimizer steps that survive bad numbers: skip a step whose loss or gradient is not finite
(the decision reduced over ranks), cooperate with fp16's GradScaler, count skipped steps so
that ``max_steps`` still ends a run, and stop after ``max_bad_steps`` bad steps in a row.

:class:`GuardedSteps` is a mixin of the LightningModules of lit_align (manual optimization,
on-policy and offline alike): a method backwards its minibatches through
:meth:`GuardedSteps.accumulate_backward` (or :meth:`GuardedSteps.backward_if_finite`) and calls
:meth:`GuardedSteps.optimizer_step_guarded` once per update. The module counts its skipped steps
itself (``skipped_steps``); making ``max_steps`` count them needs Lightning's step counter, which
only :mod:`lit_align.lightning_private` touches.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor

from lit_align import distributed, lightning_private


class GuardedSteps:
    """Backward, check, clip and step (mixed into a LightningModule with manual optimization)."""

    def accumulate_backward(self, chunks: Iterable[tuple[Any, float]], loss_of: Callable[[Any], Tensor]) -> Tensor:
        """Backward ``loss_of(rows) * weight`` for each ``(rows, weight)`` of ``chunks`` (the one
        minibatch backward loop): with weights that sum to 1 (:func:`even_chunks`: each minibatch's
        share of the rows) the accumulated gradient is that of the full-batch loss. A non-finite
        minibatch loss marks the step bad (:meth:`backward_if_finite`). Returns the weighted loss
        sum (float64, detached)."""
        total = torch.zeros((), device=self.device, dtype=torch.float64)
        for rows, weight in chunks:
            with self.timer("forward_backward"):
                loss = loss_of(rows) * weight
                self.backward_if_finite(loss)
            total = total + loss.detach().double()
        return total

    def backward_if_finite(self, loss: Tensor) -> None:
        """Backward a finite loss; a non-finite one marks the step bad. With several processes every
        rank runs the backward anyway (the gradient all-reduce is collective) and the bad step is
        then skipped on all ranks (:meth:`optimizer_step_guarded` reduces the decision)."""
        finite = bool(torch.isfinite(loss))
        if not finite:
            self.bad_steps_in_batch = True
        if finite or distributed.world_size(self.attached_trainer) > 1:
            self.backwards_this_step = getattr(self, "backwards_this_step", 0) + 1
            if self.backwards_this_step > 1 and getattr(self, "one_backward_per_step", False):
                raise distributed.UnsupportedStrategyError(distributed.ZERO3_ONE_BACKWARD)
            with self.backward_context():
                self.manual_backward(loss)

    def backward_context(self):
        """Context of each backward (the engine's: gradient checkpointing's rerun of the forward)."""
        return contextlib.nullcontext()

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
        bad = distributed.any_rank(self.attached_trainer, bad)  # every rank skips, or none
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

    @property
    def attached_trainer(self):
        """The Trainer running this module, or None (public API: ``trainer`` raises when detached)."""
        return distributed.trainer_of(self)

    def grad_scaler(self):
        """The trainer's GradScaler (``16-mixed`` on a GPU), or None."""
        trainer = self.attached_trainer
        return None if trainer is None else getattr(trainer.precision_plugin, "scaler", None)

    def on_before_optimizer_step(self, optimizer) -> None:
        """Under a GradScaler, the gradients are unscaled only here (inside ``opt.step()``): clip them
        here, and count a step whose gradients overflowed. The scaler itself then skips the update
        and lowers its scale (normal during the first steps of fp16 training); a run of
        ``max_bad_steps`` such steps in a row stops it like any non-finite gradient."""
        self.scaler_skipped = False
        if self.grad_scaler() is None:
            return
        if distributed.any_rank(self.attached_trainer, not grads_finite(self.optimized_parameters())):
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
        if distributed.strategy_is(self.attached_trainer, "FSDPStrategy"):
            distributed.clip_sharded_grad_norm_(self.optimized_parameters(), max_norm, self.trainer)
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
        lightning_private.count_step_without_update(self.trainer)

    def count_updates_as_one_step(self, n_updates: int) -> None:
        """Make ``n_updates`` optimizer steps (or skipped steps) of one training step count as a
        single step of ``trainer.global_step``, so that ``max_steps`` counts rollouts for methods
        that update several times per batch (PPO epochs × minibatches), as for the others."""
        if int(n_updates) > 1 and self.attached_trainer is not None:
            lightning_private.count_updates_as_one(self.trainer, int(n_updates))


def even_chunks(n: int, size: int) -> Iterator[tuple[slice, float]]:
    """``(rows, share)`` of consecutive minibatches of ``size`` rows out of ``n``: the chunks of
    :meth:`GuardedSteps.accumulate_backward` for a full-batch mean."""
    for start in range(0, n, size):
        rows = slice(start, min(start + size, n))
        yield rows, (rows.stop - rows.start) / n


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

