"""LightningDataModules: prompts for on-policy methods, and the exact toy space."""

from lit_align.data.prompts import ContextDataset, PromptDataModule
from lit_align.data.toy import ToyDataModule

__all__ = ["ContextDataset", "PromptDataModule", "ToyDataModule"]
