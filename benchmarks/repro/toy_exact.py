"""Exact metrics of a policy on the enumerable toy space, logged during a CLI fit.

Added by the runner to the trainer's callbacks (``benchmarks.repro.toy_exact.ExactToyMetrics``)
so that a fit launched through ``python -m lit_align fit`` logs, every ``every_n_steps``, by
enumeration of all V^T sequences (no sampling noise):

- ``exact/E_phi``: E_π[φ] (constraint satisfaction; E_π[b] for a pointwise target),
- ``exact/kl_p_pi``: KL(p‖π), the distance to the target p,
- ``exact/kl_pi_a``: KL(π‖a), the distance from the base a,
- ``exact/entropy``: H(π) in nats, and ``exact/tv_p_pi``: TV(p, π).

The target p is built from the frozen base a of the method (``pl_module.engine.base``):

- ``pointwise``: p ∝ a·φ (Khalifa et al. 2021, arXiv:2012.11635);
- ``tilt``: p ∝ a·exp(φ/β), the optimum of KL-regularised RL with reward φ and coefficient β
  (Korbak, Perez & Buckley 2022, arXiv:2205.11275);
- ``distributional``: p ∝ a·exp(λφ) with λ fitted exactly by enumeration so that E_p[φ] = μ
  (Khalifa et al. 2021);
- ``toy_model``: p = π*, the tabular LM ``ToyLM(seed=target_seed, scale=target_std)`` whose log-ratios label the
  synthetic preferences of Yun et al. (2025, arXiv:2506.01523, App. D.1).
"""

from __future__ import annotations

import math

import lightning as L
import torch

from lit_align.models.toy import ToySpace
from lit_align.moment_matching import fit_lambdas
from lit_align.scorers import Regex

TARGETS = ("pointwise", "tilt", "distributional", "toy_model")


def kl(log_p: torch.Tensor, log_q: torch.Tensor) -> float:
    """KL(p‖q) of two log-distributions over the same support (0·log 0 = 0)."""
    p = torch.exp(log_p)
    return float(torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum())


def target_log_probs(kind: str, phi: torch.Tensor, log_a: torch.Tensor, beta: float = 1.0,
                     moment: float = 0.5) -> tuple[torch.Tensor, float]:
    """``log p`` over the space and its coefficient (λ, 1/β, or inf for pointwise)."""
    if kind == "pointwise":
        coef, log_unnorm = math.inf, log_a + torch.log(phi)
    elif kind == "tilt":
        coef = 1.0 / beta
        log_unnorm = log_a + coef * phi
    elif kind == "distributional":
        coef = float(fit_lambdas(phi[:, None], [moment], log_a, tolerance=1e-12).lambdas[0])
        log_unnorm = log_a + coef * phi
    else:
        raise ValueError(f"ExactToyMetrics: target must be one of {TARGETS}, got {kind!r}")
    return log_unnorm - torch.logsumexp(log_unnorm, 0), coef


def exact_metrics(log_pi: torch.Tensor, log_p: torch.Tensor, log_a: torch.Tensor, phi: torch.Tensor) -> dict:
    pi = torch.exp(log_pi)
    return {
        "exact/E_phi": float((pi * phi).sum()),
        "exact/kl_p_pi": kl(log_p, log_pi),
        "exact/kl_pi_a": kl(log_pi, log_a),
        "exact/entropy": -float(torch.where(pi > 0, pi * log_pi, torch.zeros_like(pi)).sum()),
        "exact/tv_p_pi": 0.5 * float((pi - torch.exp(log_p)).abs().sum()),
    }


def base_model(module):
    """The method's frozen base a (the engine's since the issue-17 refactor)."""
    engine = getattr(module, "engine", None)
    return engine.base if engine is not None else module.base_model


class PeriodicRecorder(L.Callback):
    """Calls ``record(trainer, module)`` before training and every ``self.every`` steps."""

    every: int = 1

    def record(self, trainer, module) -> None:
        raise NotImplementedError

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.global_step == 0:
            self.record(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0:
            self.record(trainer, pl_module)


class ExactToyMetrics(PeriodicRecorder):
    """Logs the exact metrics above to the trainer's loggers (module docstring)."""

    def __init__(self, pattern: str = ".*", target: str = "pointwise", beta: float = 1.0, moment: float = 0.5,
                 every_n_steps: int = 10, vocab_size: int = 4, length: int = 4, target_seed: int = 1,
                 target_std: float = 1.0) -> None:
        if target not in TARGETS:
            raise ValueError(f"ExactToyMetrics: target must be one of {TARGETS}, got {target!r}")
        self.pattern, self.target, self.beta, self.moment = pattern, target, beta, moment
        self.every, self.target_seed, self.target_std = every_n_steps, target_seed, target_std
        self.space = ToySpace(vocab_size, length)
        self.phi = Regex(pattern, name="phi")(self.space.texts).double()
        self.log_a: torch.Tensor | None = None
        self.log_p: torch.Tensor | None = None

    def _prepare(self, module) -> None:
        with torch.no_grad():
            self.log_a = self.space.log_probs(base_model(module)).detach().double().cpu()
        if self.target == "toy_model":
            from lit_align.models.toy import ToyLM

            with torch.no_grad():
                self.log_p = self.space.log_probs(ToyLM(self.space.vocab_size, self.space.length,
                                                        seed=self.target_seed, scale=self.target_std)).double()
        else:
            self.log_p, _ = target_log_probs(self.target, self.phi, self.log_a, self.beta, self.moment)

    def record(self, trainer: L.Trainer, module) -> None:
        if self.log_a is None:
            self._prepare(module)
        with torch.no_grad():
            log_pi = self.space.log_probs(module.model).detach().double().cpu()
        metrics = exact_metrics(log_pi, self.log_p, self.log_a, self.phi)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)


    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step % self.every != 0:
            self.record(trainer, pl_module)
