"""Loading LMs and the Policy wrapper (sampling and sequence log-probs)."""

from lit_align.models.loading import ModelLoadError, load
from lit_align.models.policy import Policy, Samples, disable_dropout

__all__ = ["load", "ModelLoadError", "Policy", "Samples", "disable_dropout"]
