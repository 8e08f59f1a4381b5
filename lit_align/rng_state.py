"""Random states in checkpoints: torch (CPU, CUDA), numpy and python, per rank, stored in a form
``torch.load(weights_only=True)`` reads, so a resumed run draws exactly what the uninterrupted
run would have drawn."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import Tensor

from lit_align import distributed


def rng_state() -> dict:
    """This process's random states: torch (CPU and, once initialised, every CUDA device), numpy, python."""
    rng = {"torch": torch.get_rng_state(), "numpy": _numpy_state_to_safe(np.random.get_state()),
           "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def set_rng(rng: dict) -> None:
    """Restore the states saved by :func:`rng_state` (CUDA only when the device count matches)."""
    torch.set_rng_state(rng["torch"])
    np.random.set_state(_numpy_state_from_safe(rng["numpy"]))
    random.setstate(rng["python"])
    cuda = rng.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def gather_objects(trainer, obj) -> list | None:
    """``obj`` of every rank (None on a single process)."""
    if distributed.world_size(trainer) == 1 or not torch.distributed.is_initialized():
        return None
    out = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def _numpy_state_to_safe(state: tuple) -> tuple:
    """numpy's RNG state with its key array as a tensor, so ``torch.load(weights_only=True)`` reads it
    (LightningCLI and the Trainer load checkpoints weights-only)."""
    name, keys, pos, has_gauss, cached = state
    return (name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached))


def _numpy_state_from_safe(state: tuple) -> tuple:
    name, keys, pos, has_gauss, cached = state
    keys = keys.numpy() if isinstance(keys, Tensor) else np.asarray(keys)
    return (name, keys.astype(np.uint32), pos, has_gauss, cached)
