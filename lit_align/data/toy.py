"""The toy DataModule: unconditional generation over the enumerable space of models/toy.py."""

from __future__ import annotations

from lit_align.data.prompts import PromptDataModule
from lit_align.models.toy import ToySpace


class ToyDataModule(PromptDataModule):
    """Sequences of ``length`` letters over ``vocab_size`` letters, sampled from BOS.

    Use with ``model: toy``; ``space`` enumerates every sequence for exact answers.
    """

    def __init__(self, vocab_size: int = 4, length: int = 4, steps_per_epoch: int = 1000, val_steps: int = 1) -> None:
        super().__init__(prompt="", steps_per_epoch=steps_per_epoch, val_steps=val_steps)
        self.space = ToySpace(vocab_size, length)
