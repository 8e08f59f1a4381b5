"""Data loaders whose position is in the checkpoint, so a resumed run sees the same batches.

Lightning saves ``state_dict()`` of every training loader that has ``state_dict`` /
``load_state_dict`` and gives it back on resume. :class:`ResumableDataLoader` records how many
batches of the current epoch were consumed and, on resume, skips that many; with
:class:`EpochRandomSampler` (a shuffle or draw-with-replacement seeded by the run's seed and
the epoch, not by the global RNG at the moment the iterator is made) the skipped batches are
exactly those the interrupted run had used, and the next ones are those it would have used.
"""

from __future__ import annotations

from typing import Any, Iterator, Sized

import torch
from torch.utils.data import DataLoader, Sampler


class EpochRandomSampler(Sampler[int]):
    """Indices in a random order fixed by ``(seed, epoch)``: a permutation, or ``num_samples``
    draws with replacement. ``seed=None`` takes ``torch.initial_seed()`` (``seed_everything``)."""

    def __init__(self, data_source: Sized, replacement: bool = False, num_samples: int | None = None,
                 seed: int | None = None) -> None:
        self.n = len(data_source)
        self.replacement = replacement
        self.num_samples = num_samples if num_samples is not None else self.n
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # called by Lightning at every epoch start
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        seed = torch.initial_seed() if self.seed is None else self.seed
        gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + self.epoch) % (2**63))
        if self.n == 0:
            return iter([])
        if self.replacement:
            return iter(torch.randint(self.n, (self.num_samples,), generator=gen).tolist())
        order = torch.cat([torch.randperm(self.n, generator=gen) for _ in range(-(-self.num_samples // self.n))])
        return iter(order[: self.num_samples].tolist())


class ResumableDataLoader(DataLoader):
    """A DataLoader that knows how many batches of the epoch were consumed (Lightning's
    stateful-loader protocol: ``state_dict`` / ``load_state_dict``) and skips them on resume."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._consumed = 0
        self._skip = 0

    def __iter__(self):
        inner = super().__iter__()
        skip, self._skip = self._skip, 0
        self._consumed = 0
        for _ in range(skip):  # the batches the interrupted run had already trained on
            try:
                next(inner)
            except StopIteration:
                break
            self._consumed += 1
        return self._count(inner)

    def _count(self, inner):
        for batch in inner:
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict:
        return {"batches": self._consumed}

    def load_state_dict(self, state: dict) -> None:
        self._skip = int(state.get("batches", 0))


def resumable_loader(dataset, batch_size: int, shuffle: bool = False, replacement: bool = False,
                     num_samples: int | None = None, seed: int | None = None, **kwargs: Any) -> ResumableDataLoader:
    """A :class:`ResumableDataLoader` over ``dataset``: shuffled (or drawn with replacement) by an
    :class:`EpochRandomSampler` when asked, in order otherwise."""
    sampler = EpochRandomSampler(dataset, replacement, num_samples, seed) if shuffle or replacement else None
    return ResumableDataLoader(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
