"""The private Lightning internals lit_align needs, isolated here and tested in
``tests/test_lightning_private.py`` (which fails when a Lightning upgrade changes them).

Manual optimisation counts ``trainer.global_step`` as optimizer steps taken. Lightning has no
public way to count a training step that applies no update (a skipped bad step, a sampling
round) or to count several updates of one step (PPO's epochs × minibatches) as one, so that
``max_steps`` ends the run after that many rollouts: both adjust the manual-optimisation
step counter.
"""

from __future__ import annotations


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
