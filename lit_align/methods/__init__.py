"""One LightningModule per method family, over BasePolicyModule."""

from lit_align.methods.base import BasePolicyModule
from lit_align.methods.dpg import DPG
from lit_align.methods.reinforce import RLKL, Reinforce

__all__ = ["BasePolicyModule", "DPG", "Reinforce", "RLKL"]
