"""Callbacks: sample texts and diversity metrics (divergences are logged by the methods)."""

from lit_align.callbacks.diagnostics import AdvantageStatistics, Diversity, GradientVariance
from lit_align.callbacks.export import ExportPretrained
from lit_align.callbacks.perf import PerfMonitor
from lit_align.callbacks.interrupt import InterruptCheckpoint
from lit_align.callbacks.progress import StepProgressBar
from lit_align.callbacks.resume import AtomicCheckpoint
from lit_align.callbacks.phf_eval import MisalignmentEval
from lit_align.callbacks.run_summary import RunSummary
from lit_align.callbacks.samples import SampleTexts
from lit_align.callbacks.start_validation import ValidationAtStart
from lit_align.callbacks.task_metrics import TaskMetrics
from lit_align.callbacks.win_rate import WinRate

SigtermCheckpoint = InterruptCheckpoint  # its former name (it saved on SIGTERM only)

__all__ = ["AtomicCheckpoint", "InterruptCheckpoint", "SigtermCheckpoint", "AdvantageStatistics", "Diversity",
           "GradientVariance", "PerfMonitor", "ExportPretrained", "RunSummary", "StepProgressBar", "SampleTexts",
           "TaskMetrics", "MisalignmentEval", "ValidationAtStart", "WinRate"]
