"""Exact enumeration helpers for the toy space of docs/toy_space.md (shared by the toy tests).

Every distribution here is a float64 vector of log-probabilities over the ``V**T``
sequences of :class:`lit_align.models.toy.ToySpace`, in the space's enumeration order.
Nothing in this module uses the library's estimators or losses: it is the independent,
exact reference they are checked against.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lit_align.models.toy import ToyLM, ToySpace


@contextlib.contextmanager
def torch_threads(n: int = 1):
    """Run with ``n`` intra-op threads, then restore.

    The toy tensors are tiny: on a busy 2-core machine, OpenMP's thread hand-offs make
    every op tens of times slower than running single-threaded.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def base_log_probs(space: ToySpace, seed: int = 0, scale: float = 1.0) -> Tensor:
    """Exact ``log a(x)`` of the tabular ToyLM with this seed (what ``model="toy"`` builds)."""
    with torch.no_grad():
        return space.log_probs(ToyLM(space.vocab_size, space.length, seed=seed, scale=scale)).detach()


def model_log_probs(space: ToySpace, model: torch.nn.Module) -> Tensor:
    """Exact sequence log-probs of a trained ToyLM (detached, float64)."""
    with torch.no_grad():
        return space.log_probs(model).detach().double()


@dataclass
class Target:
    """``P = a·exp(log_potential)``; ``log_P`` is ``-inf`` where the potential is 0."""

    log_P: Tensor
    log_Z: float

    @property
    def Z(self) -> float:
        return math.exp(self.log_Z)

    @property
    def log_p(self) -> Tensor:
        return self.log_P - self.log_Z

    @property
    def p(self) -> Tensor:
        return torch.exp(self.log_p)


def target(log_a: Tensor, log_potential: Tensor) -> Target:
    log_P = log_a.double() + log_potential.double()
    return Target(log_P, float(torch.logsumexp(log_P, 0)))


def pointwise_target(log_a: Tensor, b: Tensor) -> Target:
    """The GDC pointwise EBM ``P = a·b`` with ``b ∈ {0, 1}``."""
    return target(log_a, torch.log(b.double()))


def tilted(log_a: Tensor, r: Tensor, beta: float) -> Tensor:
    """Log of the KL-regularised RL optimum ``a·exp(r/β)/Z`` (Korbak et al. 2022, arXiv:2205.11275)."""
    x = log_a.double() + r.double() / beta
    return x - torch.logsumexp(x, 0)


def _xlogy_terms(log_p: Tensor, log_q: Tensor) -> Tensor:
    p = torch.exp(log_p)
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))


def kl(log_p: Tensor, log_q: Tensor) -> float:
    """KL(p‖q) = Σ p log(p/q), with 0·log 0 = 0 (inf if q = 0 where p > 0)."""
    return float(_xlogy_terms(log_p.double(), log_q.double()).sum())


def tv(log_p: Tensor, log_q: Tensor) -> float:
    return 0.5 * float((torch.exp(log_p.double()) - torch.exp(log_q.double())).abs().sum())


def js(log_p: Tensor, log_q: Tensor) -> float:
    log_m = torch.logaddexp(log_p.double(), log_q.double()) - math.log(2.0)
    return 0.5 * kl(log_p, log_m) + 0.5 * kl(log_q, log_m)


def entropy(log_p: Tensor) -> float:
    return -float(_xlogy_terms(log_p.double(), torch.zeros_like(log_p, dtype=torch.float64)).sum())


def expectation(log_p: Tensor, values: Tensor) -> Tensor:
    """``E_p[values]`` for values of shape (|X|,) or (|X|, k)."""
    p = torch.exp(log_p.double())
    v = values.double()
    return (p.unsqueeze(-1) * v).sum(0) if v.dim() > 1 else (p * v).sum()


def sample_indices(log_p: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``n`` i.i.d. indices of sequences drawn from the exact distribution (multinomial)."""
    return torch.multinomial(torch.exp(log_p.double()), n, replacement=True, generator=generator)


def quiet_fit(module, datamodule, steps: int, **trainer_kwargs):
    """``Trainer.fit`` for ``steps`` steps on CPU with no logger, checkpoints, progress bar or
    validation, and Lightning's info logging silenced; returns the trainer."""
    import logging

    import lightning as L

    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        **trainer_kwargs)
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        trainer.fit(module, datamodule)
    finally:
        log.setLevel(level)
    return trainer
