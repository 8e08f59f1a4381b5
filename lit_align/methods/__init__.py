"""One LightningModule per method family, over BasePolicyModule."""

from lit_align.methods.base import BasePolicyModule
from lit_align.methods.cdpg import CDPG
from lit_align.methods.dpg import DPG
from lit_align.methods.ppo import PPO
from lit_align.methods.reinforce import RLKL, Reinforce
from lit_align.methods.sampler import Sampler
from lit_align.methods.rloo import RLOO

__all__ = ["Sampler", "BasePolicyModule", "CDPG", "DPG", "Reinforce", "RLKL", "PPO", "RLOO"]
