"""Counting the memory a run holds: bytes of distinct tensor storages (weights, gradients,
optimizer state, frozen copies). Used by the LoRA tests and ``benchmarks/memory_scale.py``."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _tensors(obj, seen: set[int]):
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, nn.Module):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        for t in obj.parameters():
            yield t
            if t.grad is not None:
                yield t.grad
        yield from obj.buffers()
    elif isinstance(obj, torch.optim.Optimizer):
        yield from _tensors(list(obj.state.values()), seen)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v, seen)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v, seen)


def held_bytes(*objects) -> int:
    """Bytes of the distinct storages held by modules (parameters, their gradients, buffers),
    optimizers (state), tensors, and dicts/lists of them; shared storages count once."""
    storages: dict[int, int] = {}
    for t in _tensors(list(objects), set()):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
    return sum(storages.values())
