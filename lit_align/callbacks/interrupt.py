"""``last.ckpt`` whenever a run stops early: ctrl-C, SIGTERM, or a user error during training.

The CLI adds :class:`InterruptCheckpoint` to every run, so it works whether or not a
checkpoint callback is configured.

Nothing is saved when no step completed in this run (an older ``last.ckpt`` stays as it is).

- **SIGTERM** (a scheduler's pre-emption, ``kill PID``): Lightning finishes the training batch
  in progress and stops; the checkpoint is written then (the state between two steps, so the
  resumed run is exact).
- **ctrl-C (SIGINT)**: handled the same way — the first ctrl-C asks Lightning to stop after the
  batch in progress, exactly as SIGTERM does (the handler sends the process SIGTERM); a second
  ctrl-C aborts at once without saving. The CLI then exits with status 130.
- **A user error during training** (a scorer that raises or returns NaN, a corpus line that is
  not JSON, ...: a ``ValueError``, which :class:`lit_align.errors.UserError` is): the weights, optimizer and
  method state of the last completed step are saved (the step that failed applied nothing; its
  random draws are not replayed on resume), and the error's message says where. An
  out-of-memory error is treated the same way (the step that ran out applied nothing).
"""

from __future__ import annotations

import signal
import sys
import threading

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_align.callbacks.resume import checkpoint_dir, install_atomic_io, save_atomic

_LAST_SIGNAL: list[str] = []  # what stopped the latest run of this process ("SIGINT" / "SIGTERM")


def forget_interrupts() -> None:
    """Start a new command: no run of it was interrupted yet."""
    _LAST_SIGNAL.clear()


def interrupted_by() -> str | None:
    """``"SIGINT"`` or ``"SIGTERM"`` if the latest run of this process was stopped by it."""
    return _LAST_SIGNAL[-1] if _LAST_SIGNAL else None


class InterruptCheckpoint(Callback):
    """Save ``last.ckpt`` in the run's checkpoint folder on SIGINT, SIGTERM and a user error."""

    def __init__(self, filename: str = "last") -> None:
        self.filename = filename
        self.saved_path: str | None = None
        self._sigint = False
        self._previous = None
        self._start_step: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        install_atomic_io(trainer)  # every checkpoint of the run, not only ours, appears whole

    # ------------------------------------------------------------------ ctrl-C → SIGTERM
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _LAST_SIGNAL.clear()
        self._sigint = False
        self._start_step = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame) -> None:
        # abort now on a second ctrl-C, and before Lightning installs its SIGTERM handler (setup,
        # hparams logging): no step has run, nothing to save, and a raised SIGTERM would kill the
        # process without a word
        if self._sigint or signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            _LAST_SIGNAL.append("SIGINT")
            self._restore()
            raise KeyboardInterrupt
        self._sigint = True
        print("\nctrl-C: stopping after the step in progress and saving last.ckpt (ctrl-C again to abort "
              "without saving)", file=sys.stderr, flush=True)
        signal.raise_signal(signal.SIGTERM)  # Lightning's own pre-emption path: stop between two steps

    def _restore(self) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
        self._previous = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_step = trainer.global_step

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    # ------------------------------------------------------------------ saving
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()
        if trainer.state.fn != "fit" or isinstance(exception, KeyboardInterrupt):
            return
        if isinstance(exception, SIGTERMException):
            why = "SIGINT" if self._sigint else "SIGTERM"
            _LAST_SIGNAL.append(why)
        elif isinstance(exception, (ValueError, torch.OutOfMemoryError)):  # UserError, bad inputs; too big a batch
            why = type(exception).__name__
        else:
            return  # a bug: its traceback, and the periodic checkpoints, are what is left
        if self._start_step is None or trainer.global_step <= self._start_step:
            return  # no step completed in this run: nothing new to keep, and an older last.ckpt stays
        path = checkpoint_dir(trainer) / f"{self.filename}.ckpt"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_atomic(trainer, str(path))
        self.saved_path = str(path)
        note = (f"Saved {path} at step {trainer.global_step} (the last completed step); resume with "
                "`fit ... --ckpt_path last`.")
        rank_zero_info(f"{why}: saved{note[len('Saved'):]}")
        if not isinstance(exception, SIGTERMException) and hasattr(exception, "add_note"):
            exception.add_note(note)
