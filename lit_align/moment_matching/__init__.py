"""Distributional and hybrid constraints: fitting λ by moment matching
(Khalifa et al. 2021, arXiv:2012.11635; disco's ``constrain``, arXiv:2303.05431).

The information projection of the base LM ``a`` onto ``{c : E_c[φ] = μ̄}`` is the
exponential family ``p_λ(x) ∝ a(x)·exp(λ·φ(x))`` (times pointwise factors ``b(x)`` for a
hybrid constraint), with λ the minimiser of the convex dual

    D(λ) = log Z(λ) − λ·μ̄,        ∇D = E_{p_λ}[φ] − μ̄,        ∇²D = Cov_{p_λ}[φ].

``E_{p_λ}[φ]`` is estimated by self-normalised importance sampling (SNIS) on a fixed
sample ``x_1..x_M ~ q``: ``w_i ∝ exp(log a_i − log q_i + Σ log b_i + λ·φ_i)``. With ``q = a``
the weights are ``b_i·exp(λ·φ_i)``. Passing the whole (enumerated) space with
``log_w0 = log a`` makes the same function exact.

Conditional targets (CDPG, ``p_c ∝ a(·|c)·exp(λ·φ(·, c))``, one λ for all contexts) match
``E_c E_{p_c}[φ] = μ̄``: the samples of each context are self-normalised separately and the
per-context moments averaged (``groups``; see :mod:`lit_align.moment_matching.dual`).

SNIS is biased when μ̄ is far from ``E_q[φ]`` (the weights degenerate); the
DPG option ``moment_matching_refit_every`` re-fits on samples of the current policy, which
moves q toward ``p_λ``.

Usage in a target (config: ``class_path: lit_align.moment_matching.Distributional``)::

    target = [Distributional([female], [0.5]), Pointwise(sports)]       # hybrid

λ starts unfitted; :class:`~lit_align.methods.DPG` fits it at fit start (before the first
step) on ``moment_matching_samples`` samples of the base, logs the achieved moments, and
stores λ in the checkpoint.

Modules: :mod:`~lit_align.moment_matching.dual` (the dual, pure tensor functions) and
:mod:`~lit_align.moment_matching.target` (the potential, fitting on a method's samples).
"""

from lit_align.moment_matching.dual import (
    MomentFit,
    MomentMatchingError,
    check_moments_in_range,
    check_moments_reachable,
    fit_lambdas,
    snis_moments,
)
from lit_align.moment_matching.target import (
    Distributional,
    default_contexts,
    distributional_potentials,
    fit_target,
    fit_target_by_sampling,
)

__all__ = [
    "Distributional",
    "MomentFit",
    "MomentMatchingError",
    "snis_moments",
    "check_moments_in_range",
    "check_moments_reachable",
    "fit_lambdas",
    "fit_target",
    "fit_target_by_sampling",
    "default_contexts",
    "distributional_potentials",
]
