"""The claims: what each one runs (per budget) and how its verdict is read from the runs.

Every config and parameter name the claims use is in :data:`NAMES` below — and only there — so
that a rename (issue 17: ``beta`` → ``kl_coef`` / ``temperature``, ``<method>_<task>.yaml``
config files) is one edit of this table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

# ----------------------------------------------------------------------------- names
# The names after the issue-17 renames (RENAMES: toy_dpg.yaml → dpg_toy.yaml; beta → kl_coef /
# temperature). No other file of benchmarks/repro spells a config file or a renamed parameter.
# Changed names change the runs' fingerprints, so finished runs are run again.
NAMES = {
    # shipped configs (configs/ and lit_align/configs/)
    "config.toy": "dpg_toy.yaml",
    "config.rlkl_amazing": "rlkl_amazing.yaml",
    "config.dpg_amazing": "dpg_amazing.yaml",
    "config.ppo_amazing": "ppo_amazing.yaml",
    "config.reinforce_amazing": "reinforce_amazing.yaml",
    "config.cdpg_translate": "cdpg_translate_offline.yaml",
    "config.cdpg_code": "cdpg_code_compile_offline.yaml",
    "config.dpg_translate": "cdpg_baselines/dpg_translate.yaml",
    "config.dpg_code": "cdpg_baselines/dpg_code_compile.yaml",
    "config.ppo_code": "cdpg_baselines/ppo_code_compile.yaml",
    "config.reinforce_translate": "cdpg_baselines/reinforce_translate.yaml",
    "config.reinforce_code": "cdpg_baselines/reinforce_code_compile.yaml",
    "config.phf_pep8": "phf_pep8_offline.yaml",
    "config.reward_model_toy": "dpo_toy.yaml",        # its SyntheticPreferenceDataModule; model replaced
    "config.dpo_toy": "dpo_toy.yaml",
    "config.pmle_toy": "pmle_toy.yaml",
    "config.distill_toy": "pref_distill_toy.yaml",
    "config.rkl_toy": "rkl_toy.yaml",
    # classes
    "class.DPG": "lit_align.methods.DPG",
    "class.CDPG": "lit_align.methods.CDPG",
    "class.RLKL": "lit_align.methods.RLKL",
    "class.REINFORCE": "lit_align.methods.Reinforce",
    "class.PPO": "lit_align.methods.PPO",
    "class.RLOO": "lit_align.methods.RLOO",
    "class.RewardModel": "lit_align.methods.RewardModel",
    "class.Pointwise": "lit_align.targets.Pointwise",
    "class.RewardTilt": "lit_align.targets.RewardTilt",
    "class.Distributional": "lit_align.moment_matching.Distributional",
    "class.Regex": "lit_align.scorers.Regex",
    "class.ExactToyMetrics": "benchmarks.repro.toy_exact.ExactToyMetrics",
    # parameters (left: what the claim means; right: the parameter's name in the method)
    "param.rlkl.kl_coef": "kl_coef",          # RLKL
    "param.rloo.kl_coef": "kl_coef",          # RLOO
    "param.dpo.kl_coef": "kl_coef",           # DPO
    "param.pmle.kl_coef": "kl_coef",          # PMLE
    "param.distill.kl_coef": "kl_coef",       # PreferenceDistillation
    "param.ppo.kl_coef": "kl_coef",           # PPO
    "param.tilt.temperature": "temperature",  # RewardTilt
    "param.phf.temperature": "temperature",   # PHF RWR/AWR
}


def n(key: str) -> str:
    """The current name behind a :data:`NAMES` key."""
    return NAMES[key]


# ----------------------------------------------------------------------------- claims
@dataclass
class Claim:
    """A paper claim: one sentence, where the paper makes it, the runs per budget, the reading."""

    name: str
    section: str
    sentence: str
    plan: Callable[[str, list[int]], list]              # (budget, seeds) -> [Run]
    analyse: Callable[[dict, str], dict]                # ({method: {lr: {seed: curves}}}, budget) -> analysis
    needs: str = ""                                      # what the runs need beyond the base install
    budgets: dict[str, str] = field(default_factory=dict)  # budget -> one line describing it
    plot: Callable | None = None                         # (analysis, results, path) -> None


def all_claims() -> dict[str, Claim]:
    from benchmarks.repro import claims_lm, claims_toy

    claims = claims_toy.claims() + claims_lm.claims()
    return {c.name: c for c in claims}


def select(names: list[str]) -> list[Claim]:
    """Claims by exact name, or every claim whose name starts with the given prefix."""
    registry = all_claims()
    out: list[Claim] = []
    for name in names:
        hits = [registry[name]] if name in registry else [c for k, c in registry.items() if k.startswith(name)]
        if not hits:
            raise SystemExit(f"error: unknown claim {name!r}; claims: {', '.join(registry)}")
        out += [c for c in hits if c not in out]
    return out


def finite(values) -> list[float]:
    return [v for v in values if not (isinstance(v, float) and math.isnan(v))]


def load_config_model(key: str) -> dict:
    """The ``model`` section of the shipped config behind a :data:`NAMES` key."""
    from benchmarks.repro.runner import load_config

    return load_config(n(key))["model"]
