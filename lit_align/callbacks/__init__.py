"""Callbacks: sample texts and diversity metrics (divergences are logged by the methods)."""

from lit_align.callbacks.diagnostics import AdvantageStatistics, Diversity, GradientVariance
from lit_align.callbacks.perf import PerfMonitor
from lit_align.callbacks.samples import SampleTexts
from lit_align.callbacks.task_metrics import TaskMetrics

__all__ = ["AdvantageStatistics", "Diversity", "GradientVariance", "PerfMonitor", "SampleTexts", "TaskMetrics"]
