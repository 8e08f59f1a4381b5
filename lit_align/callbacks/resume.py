"""Checkpoints that survive being killed, and finding the one to resume from.

- :class:`AtomicCheckpoint`: a ``ModelCheckpoint`` whose files appear whole or not at all
  (written to ``NAME.partial`` then renamed), so a run killed with SIGKILL while saving
  leaves the previous ``last.ckpt`` intact. Defaults: ``save_last=True``.
- :class:`AtomicCheckpointIO`: the same for every file checkpoint the strategy writes (a
  ``CheckpointIO`` plugin; the CLI installs it in every run).
- :func:`find_last_checkpoint`: what ``fit --ckpt_path last`` resumes from: the newest
  ``last*.ckpt`` among the checkpoint folders of every version of the run's logger (each
  TensorBoard/CSV run gets a new ``version_N``, so Lightning alone looks in an empty one).
  ``last`` with no checkpoint is an error; ``auto`` resumes the newest one if there is one and
  starts from scratch otherwise (a pre-emptible job's command line).

``last.ckpt`` on ctrl-C, SIGTERM and errors: :mod:`lit_align.callbacks.interrupt`.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.plugins import CheckpointIO, TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_align.errors import UserError
from lit_align.lightning_private import DeferredSaveCheckpoint
from lit_align.renames import stale_hparams

PARTIAL = ".partial"


class CheckpointError(UserError):
    """A ``--ckpt_path`` that cannot be resumed from; the message says why and what to do."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A ``--ckpt_path`` that does not exist."""

SPECIAL_CKPT = ("last", "auto", "best", "hpc", "registry")
_LAST = re.compile(r"^last(-v\d+)?\.ckpt$")


def save_atomic(trainer: L.Trainer, filepath: str, weights_only: bool = False) -> None:
    """``trainer.save_checkpoint`` to ``filepath + '.partial'``, then rename (on rank 0).

    A checkpoint that is a folder (DeepSpeed, FSDP's sharded state dict: every rank writes its
    shard) replaces the previous folder: the old one is moved aside, the new one renamed, the old
    one deleted (a kill between the two renames leaves ``NAME.old`` and no ``NAME``)."""
    tmp = filepath + PARTIAL
    trainer.save_checkpoint(tmp, weights_only)
    trainer.strategy.barrier("lit_align.save_atomic.written")  # every rank's shard is written
    if trainer.is_global_zero and os.path.exists(tmp):
        replace_path(tmp, filepath)
    trainer.strategy.barrier("lit_align.save_atomic")


def replace_path(src: str, dst: str) -> None:
    """``os.replace`` that also replaces a folder (or a file by a folder and back)."""
    if not os.path.isdir(dst) and not os.path.isdir(src):
        os.replace(src, dst)
        return
    old = dst + ".old"
    if os.path.lexists(dst):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(src, dst)
    if os.path.isdir(old):
        shutil.rmtree(old, ignore_errors=True)
    elif os.path.lexists(old):
        os.remove(old)


class AtomicCheckpointIO(CheckpointIO):
    """Lightning's ``TorchCheckpointIO`` writing to ``PATH.partial`` and renaming: every file
    checkpoint saved through the strategy (Lightning's own ``ModelCheckpoint`` included) appears
    whole or not at all. Installed by :func:`install_atomic_io`."""

    def __init__(self, inner: CheckpointIO | None = None) -> None:
        self.inner = inner or TorchCheckpointIO()

    def save_checkpoint(self, checkpoint: dict, path: Any, storage_options: Any | None = None) -> None:
        tmp = str(path) + PARTIAL
        self.inner.save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, path)

    def load_checkpoint(self, path: Any, map_location: Any | None = None, **kwargs: Any) -> dict:
        return self.inner.load_checkpoint(path, map_location, **kwargs)

    def remove_checkpoint(self, path: Any) -> None:
        self.inner.remove_checkpoint(path)

    def teardown(self) -> None:
        self.inner.teardown()


def install_atomic_io(trainer: L.Trainer) -> None:
    """Wrap the strategy's plain ``TorchCheckpointIO`` in :class:`AtomicCheckpointIO` (other
    plugins, e.g. asynchronous ones, are left alone; DeepSpeed and sharded FSDP write their
    checkpoint folders themselves, and :func:`save_atomic` renames those)."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO(trainer.strategy.checkpoint_io)


class AtomicCheckpoint(DeferredSaveCheckpoint):
    """``ModelCheckpoint`` with atomic writes and ``save_last=True`` by default (same arguments).

    A step checkpoint (``every_n_train_steps``) due on a step that is followed by validation
    is written after the validation: Lightning skips a validation that was pending when the
    checkpoint was written, so a run resumed from it would differ from an uninterrupted one.
    """

    def __init__(self, *args: Any, save_last: bool | str | None = True, **kwargs: Any) -> None:
        super().__init__(*args, save_last=save_last, **kwargs)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        install_atomic_io(trainer)
        super().setup(trainer, pl_module, stage)

    def write(self, trainer: L.Trainer, filepath: str) -> None:
        save_atomic(trainer, filepath, self.save_weights_only)


def checkpoint_dir(trainer: L.Trainer) -> Path:
    """Where this run's checkpoints go: the first ModelCheckpoint's folder, else Lightning's default."""
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.dirpath is not None:
            return Path(cb.dirpath)
    if trainer.loggers and trainer.loggers[0].log_dir is not None:
        return Path(trainer.loggers[0].log_dir) / "checkpoints"
    return Path(trainer.default_root_dir) / "checkpoints"


def candidate_dirs(trainer: L.Trainer) -> list[Path]:
    """Folders that may hold this experiment's checkpoints (every logger version, explicit dirpaths)."""
    dirs = [Path(cb.dirpath) for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath]
    if trainer.loggers:
        logger = trainer.loggers[0]
        root = Path(logger.save_dir or trainer.default_root_dir) / str(logger.name or "")
        if root.is_dir():
            dirs += sorted(p / "checkpoints" for p in root.iterdir() if p.is_dir())
    dirs.append(Path(trainer.default_root_dir) / "checkpoints")
    return dirs


def find_last_checkpoint(dirs: list[Path]) -> Path | None:
    """The most recently written complete ``last*.ckpt`` in ``dirs`` (None if there is none)."""
    found = [p for d in dirs if d.is_dir() for p in d.iterdir() if _LAST.match(p.name)]  # a file, or a sharded folder
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def check_checkpoint(path: str | Path, method: str | None = None, model: str | None = None) -> None:
    """Refuse, before any model is loaded, a checkpoint that does not exist, is not a
    checkpoint, was written by another method than ``method`` (a class name), or trained
    another ``model`` (the method's ``model:`` argument) than the config's."""
    import torch

    path = Path(path)
    if path.is_dir():  # a sharded checkpoint (DeepSpeed, FSDP): the strategy reads it
        if not any(path.iterdir()):
            raise CheckpointError(f"--ckpt_path {str(path)!r} is an empty folder; give a .ckpt file (or the folder "
                                  "of a DeepSpeed / sharded FSDP checkpoint)")
        return
    if not path.is_file():
        raise CheckpointNotFoundError(f"--ckpt_path {str(path)!r} does not exist; give a .ckpt file, or `last` to "
                                      "resume the newest last.ckpt of this experiment")
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # reads little
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            ckpt = torch.load(path, map_location="cpu", weights_only=True)  # an old (non-zip) torch file
    except Exception as err:  # truncated file, not a torch file, ...
        raise CheckpointError(
            f"--ckpt_path {str(path)!r} is not a readable checkpoint ({type(err).__name__}: {str(err)[:200]}); "
            f"with AtomicCheckpoint a run killed while saving leaves NAME.ckpt{PARTIAL}, never a half-written "
            "NAME.ckpt"
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"--ckpt_path {str(path)!r} is not a Lightning checkpoint (no state_dict)")
    saved = (ckpt.get("lit_align") or {}).get("method")
    if method is not None and saved is not None and saved != method:
        raise CheckpointError(f"--ckpt_path {str(path)!r} was written by method {saved!r}, but the config's model "
                              f"is {method!r}; resume with the same model class_path")
    hparams = ckpt.get("hyper_parameters") or {}
    stale = stale_hparams(saved or method, hparams) if (saved or method) else []
    if stale:
        raise CheckpointError(
            f"--ckpt_path {str(path)!r} was written by an older lit_align: {', '.join(stale)} "
            f"{'is' if len(stale) == 1 else 'are'} no longer {'a parameter' if len(stale) == 1 else 'parameters'} "
            f"of {saved or method}, so the run cannot be resumed by this version; start a new run (the weights "
            f"of a transformers policy can still be taken out: `python -m lit_align export --ckpt_path {path}`)")
    trained = hparams.get("model")
    if model is not None and isinstance(trained, str) and trained != model:
        raise CheckpointError(f"--ckpt_path {str(path)!r} trained model {trained!r}, but the config's model is "
                              f"{model!r}; resume with model: {trained}, or start a new run without --ckpt_path")


def resolve_ckpt_path(value: str | None, trainer: L.Trainer, module: L.LightningModule | None, fit: bool = True):
    """``last`` (when fitting) → the newest ``last*.ckpt`` of the experiment, an error if there is
    none; ``auto`` → the same, or None (start from scratch) if there is none; a path → checked by
    :func:`check_checkpoint`; other values unchanged."""
    if value is None or value in ("best", "hpc", "registry") or str(value).startswith("registry:"):
        return value
    if value in ("last", "auto"):
        if not fit:
            if value == "auto":
                raise CheckpointError("--ckpt_path auto is for fit; give a checkpoint file (or `last`, `best`)")
            return value
        dirs = candidate_dirs(trainer)
        found = find_last_checkpoint(dirs)
        if found is None:
            if value == "auto":
                return None
            raise CheckpointNotFoundError(
                f"--ckpt_path last: no last*.ckpt of this experiment under {', '.join(repr(str(d)) for d in dirs)}; "
                "there is nothing to resume. Drop --ckpt_path to start a new run, or use --ckpt_path auto to resume "
                "when a checkpoint exists and start from scratch otherwise")
        value = str(found)
    check_checkpoint(value, None if module is None else type(module).__name__)
    return value
