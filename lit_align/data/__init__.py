"""LightningDataModules: prompts for on-policy methods, and the exact toy space."""

from lit_align.data.conditional import (
    CodeDataModule,
    Context,
    ContextListDataModule,
    ContextsDataModule,
    DatasetLoadError,
    FileContextsDataModule,
    SummarizationDataModule,
    TranslationDataModule,
)
from lit_align.data.preference import PreferenceBatch, PreferenceDataModule, PreferencePromptsDataModule
from lit_align.data.pretraining import PretrainingDataModule, ScoredChunks
from lit_align.data.prompts import ContextDataset, PromptDataModule
from lit_align.data.synthetic_preferences import SyntheticPreferenceDataModule
from lit_align.data.toy import ToyDataModule

__all__ = [
    "CodeDataModule", "Context", "ContextListDataModule", "ContextsDataModule", "DatasetLoadError",
    "FileContextsDataModule", "SummarizationDataModule", "TranslationDataModule",
    "ContextDataset", "PromptDataModule", "ToyDataModule",
    "PreferenceBatch", "PreferenceDataModule", "SyntheticPreferenceDataModule",
    "PretrainingDataModule", "ScoredChunks"]
