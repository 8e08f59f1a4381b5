"""Distance to a pointwise target p ∝ a·b for any on-policy method, logged during a CLI fit.

RL trainers do not know p, so they cannot log KL(p‖π); this callback does it the same way for
every method, from ``n_samples`` fresh samples of π every ``every_n_steps`` steps:

- ``target/kl_p_pi``: KL(p‖π) by importance sampling from π with Z = E_a[b] estimated once
  from ``z_samples`` samples of the base a (the importance-sampling estimator of
  Khalifa et al. 2021, arXiv:2012.11635, also in Korbak et al. 2022, arXiv:2206.00761); not logged
  when no sample satisfies b (the estimate would be 0, when KL(p‖π) is in fact large);
- ``target/kl_pi_a``: KL(π‖a) = E_π[log π − log a]; ``target/E_b``: E_π[b]; ``target/entropy``:
  H(π) = E_π[−log π] of whole completions (the diversity RL without a KL term loses).
"""

from __future__ import annotations

import math
from typing import Sequence

import lightning as L
import torch

from lit_align import estimators
from lit_align.scorers.base import Scorer

from benchmarks.repro.toy_exact import PeriodicRecorder


class PointwiseTargetDistance(PeriodicRecorder):
    def __init__(self, scorer: Scorer, every_n_steps: int = 10, n_samples: int = 256, z_samples: int = 2048,
                 contexts: Sequence[str] = ("",)) -> None:
        self.scorer, self.every, self.n, self.z_samples = scorer, every_n_steps, n_samples, z_samples
        self.contexts = list(contexts)
        self.log_z: float | None = None

    @torch.no_grad()
    def _draw(self, module, model, n: int):
        per = max(1, n // len(self.contexts))
        samples = module.engine.sample(self.contexts, per, model=model)
        b = self.scorer(samples.texts, samples.contexts).double().cpu()
        return samples, b

    @torch.no_grad()
    def record(self, trainer: L.Trainer, module) -> None:
        if self.log_z is None:
            _, b = self._draw(module, module.engine.base, self.z_samples)
            self.log_z = math.log(max(float(b.mean()), 1.0 / (2 * len(b))))  # no hit: half a hit, not −inf
        samples, b = self._draw(module, module.model, self.n)
        log_pi = module.engine.log_prob(module.engine.model, samples).double().cpu()
        log_a = module.engine.base_log_prob(samples).double().cpu()
        log_P = log_a + torch.log(b)
        metrics = {"target/kl_pi_a": float((log_pi - log_a).mean()), "target/E_b": float(b.mean()),
                   "target/entropy": float(-log_pi.mean())}
        if b.any():  # with no sample in p's support the estimate reads 0, the opposite of the truth
            metrics["target/kl_p_pi"] = float(estimators.kl_target_policy(log_P, log_pi, log_pi, self.log_z))
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

