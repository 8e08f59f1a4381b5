"""Callbacks: sample texts and diversity metrics (divergences are logged by the methods)."""

from lit_align.callbacks.samples import SampleTexts

__all__ = ["SampleTexts"]
