"""Context data for on-policy methods: the module emits contexts (strings), not samples.

The method samples completions inside ``training_step``; a batch is a list of contexts.
"""

from __future__ import annotations

from typing import Sequence

import lightning as L
from torch.utils.data import DataLoader, Dataset

from lit_align.data.resumable import ResumableDataLoader


class ContextDataset(Dataset):
    """``length`` items cycling through ``contexts`` (a fixed-size epoch over any context list)."""

    def __init__(self, contexts: Sequence[str], length: int | None = None) -> None:
        if not contexts:
            raise ValueError("ContextDataset: the list of contexts is empty")
        self.contexts = list(contexts)
        self.length = length if length is not None else len(self.contexts)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> str:
        return self.contexts[i % len(self.contexts)]


def collate_contexts(batch: list[str]) -> list[str]:
    return list(batch)


class PromptDataModule(L.LightningDataModule):
    """Unconditional generation: every step uses one fixed prefix (``""`` = start from BOS).

    Args:
        prompt: the prefix every sample continues ("" samples from BOS, as in GDC).
        steps_per_epoch: training steps per epoch (one context per step).
        val_steps: validation batches (each samples ``val_samples`` of the method).
    """

    def __init__(self, prompt: str = "", steps_per_epoch: int = 1000, val_steps: int = 1) -> None:
        super().__init__()
        if steps_per_epoch < 1 or val_steps < 0:
            raise ValueError("steps_per_epoch must be ≥ 1 and val_steps ≥ 0")
        self.prompt = prompt
        self.steps_per_epoch = steps_per_epoch
        self.val_steps = val_steps

    def train_dataloader(self) -> DataLoader:
        # resumable (its position in the epoch is in the checkpoint), though every batch is the same prompt
        return ResumableDataLoader(ContextDataset([self.prompt], self.steps_per_epoch), batch_size=1,
                                   collate_fn=collate_contexts)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(ContextDataset([self.prompt], self.val_steps), batch_size=1, collate_fn=collate_contexts)

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()
