"""One LightningModule per method family: on-policy methods over OnPolicyModule, offline ones over
the offline base; both over EngineModule (docs/architecture.md)."""

from lit_align.methods.engine_module import EngineModule
from lit_align.methods.offline import OfflineModule
from lit_align.methods.on_policy import OnPolicyModule
from lit_align.methods.cdpg import CDPG
from lit_align.methods.dpg import DPG
from lit_align.methods.phf import PHF
from lit_align.methods.ppo import PPO
from lit_align.methods.reinforce import RLKL, Reinforce
from lit_align.methods.sampler import Sampler
from lit_align.methods.rloo import RLOO
from lit_align.methods.dpo import DPO
from lit_align.methods.pmle import PMLE
from lit_align.methods.pref_distill import PreferenceDistillation
from lit_align.methods.preference_base import PreferenceModule
from lit_align.methods.reward_model import RewardModel

__all__ = ["Sampler", "EngineModule", "OfflineModule", "OnPolicyModule", "CDPG", "DPG", "Reinforce", "RLKL", "PPO", "RLOO",
           "PreferenceModule", "DPO", "PMLE", "PreferenceDistillation", "RewardModel", "PHF"]
