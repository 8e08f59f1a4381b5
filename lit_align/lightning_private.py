"""Every use of a private Lightning name, in one place (tests/test_lightning_private.py and
tests/test_lightning_private_checkpoint.py fail when a Lightning upgrade changes one of them).

Checkpoint callback (lit_align.callbacks.resume.AtomicCheckpoint):

- :func:`validates_after_this_batch`: whether the fit loop will run validation right after
  the current training batch (the epoch loop's ``_should_check_val_fx``). A step checkpoint due
  then is written after that validation: Lightning skips a validation that was pending when the
  checkpoint was written, so a run resumed from it would differ from an uninterrupted one.
- :class:`DeferredSaveCheckpoint`: a ``ModelCheckpoint`` that defers such a step checkpoint to
  the end of the validation, and writes every checkpoint through :meth:`write` (overriding the
  protected ``_save_checkpoint``): DeepSpeed and sharded FSDP write checkpoint *folders*
  themselves, past any ``CheckpointIO`` plugin, so only this hook sees every write. Its
  ``last.ckpt`` always holds the final step (Lightning's ``on_train_end`` writes one only when
  none was written before), saved where a resumed run continues exactly: at the end of the
  final step's validation when there is one (the epoch loop counts the step for the loggers
  after its validation, and on resume skips that validation and counts it again), else at the
  end of training (``tests/test_cli.py::test_last_checkpoint_holds_the_final_step_and_resumes_exactly``
  fails if an upgrade changes either behaviour).

Step counting (lit_align.methods.stepping):

Manual optimisation counts ``trainer.global_step`` as optimizer steps taken. Lightning has no
public way to count a training step that applies no update (a skipped bad step, a sampling
round) or to count several updates of one step (PPO's epochs × minibatches) as one, so that
``max_steps`` ends the run after that many rollouts: both adjust the manual-optimisation
step counter.

Lightning behaviours relied on without a private name (an upgrade that changes them is caught by
the tests named):

- The fit and evaluation loops read a StopIteration as the end of the data, so one raised inside
  a step would end the epoch (and start the next, forever) or validation silently:
  ``EngineModule`` re-raises it as an error (``tests/test_interrupt.py``). If Lightning stops
  catching it, the guard is merely unneeded.
- Lightning installs its SIGTERM handler (its pre-emption path, which ctrl-C reuses) only for
  the run stage, after ``on_fit_start`` and the hyperparameter logging: ``InterruptCheckpoint``
  reads the SIGTERM disposition itself rather than assuming the order
  (``tests/test_user_errors.py``, the ctrl-C tests).
"""

from __future__ import annotations

import warnings
from typing import Any
from weakref import proxy

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

# the private names this file relies on, checked by tests/test_lightning_private.py
CHECKPOINT_PRIVATES = ("_every_n_train_steps", "_should_skip_saving_checkpoint", "_defer_save_until_validation",
                       "_monitor_candidates", "_save_topk_checkpoint", "_save_last_checkpoint", "_save_checkpoint",
                       "_last_global_step_saved", "_last_checkpoint_saved")
LOOP_PRIVATES = ("_data_fetcher", "_should_check_val_fx")
#: the start of ModelCheckpoint's warning for manual optimisation with ``every_n_train_steps``;
#: lit_align checkpoints after its step on purpose (the state after step N, saved as step N), so
#: :class:`DeferredSaveCheckpoint` silences it around its own step checkpoints (nowhere else)
MANUAL_CHECKPOINT_WARNING = "Using ModelCheckpoint with manual optimization and every_n_train_steps"


def validates_after_this_batch(trainer: L.Trainer) -> bool:
    loop = trainer.fit_loop
    fetcher = getattr(loop, "_data_fetcher", None)
    return (fetcher is not None and trainer.enable_validation
            and bool(loop.epoch_loop._should_check_val_fx(fetcher)))


class DeferredSaveCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose step checkpoints wait for a validation that follows their step,
    and whose writes go through :meth:`write` (same arguments as ``ModelCheckpoint``)."""

    def write(self, trainer: L.Trainer, filepath: str) -> None:
        trainer.save_checkpoint(filepath, self.save_weights_only)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        every = self._every_n_train_steps
        due = every >= 1 and trainer.global_step % every == 0 and not self._should_skip_saving_checkpoint(trainer)
        if due and validates_after_this_batch(trainer):
            self._defer_save_until_validation = True
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=MANUAL_CHECKPOINT_WARNING)
            super().on_train_batch_end(trainer, pl_module, *args, **kwargs)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._defer_save_until_validation and not trainer.sanity_checking:
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
            self._defer_save_until_validation = False
        else:
            super().on_validation_end(trainer, pl_module)
        if 0 < trainer.max_steps <= trainer.global_step:  # the final step's validation: see on_train_end
            self.save_last_now(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning writes last.ckpt at the end only when no last.ckpt was ever written, so a run of
        # 25 steps with a checkpoint every 10 kept step 20 as its "last". When the final step is
        # followed by validation, last.ckpt is written at the end of that validation instead (as
        # Lightning's own validation checkpoints are): one written here, after the loop counted
        # the step for the loggers, would resume with its logged steps one too high.
        self.save_last_now(trainer)

    def save_last_now(self, trainer: L.Trainer) -> None:
        """Write last.ckpt unless it already holds this step (or saving is off: sanity check, fast_dev_run)."""
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        self.write(trainer, filepath)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))


def optimizer_step_progress(trainer):
    """The counter behind ``trainer.global_step`` under manual optimisation."""
    return trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress


def count_step_without_update(trainer) -> None:
    """Count one optimizer step that was not taken (``global_step`` += 1)."""
    progress = optimizer_step_progress(trainer)
    progress.increment_ready()
    progress.increment_completed()


def count_updates_as_one(trainer, n_updates: int) -> None:
    """Make the last ``n_updates`` optimizer steps count as a single ``global_step``."""
    extra = int(n_updates) - 1
    if extra <= 0:
        return
    progress = optimizer_step_progress(trainer)
    for tracker in (progress.total, progress.current):
        tracker.ready -= extra
        tracker.completed -= extra
