"""The convex dual of moment matching, as pure tensor functions (Khalifa et al. 2021,
arXiv:2012.11635; checked against exact enumeration in docs/toy_space.md).

λ minimises ``D(λ) = (1/G) Σ_g log Σ_{i∈g} w0_i·exp(λ·φ_i) − λ·μ̄`` over a fixed sample
split into G groups (contexts), with ``∇D = μ̂(λ) − μ̄`` and ``∇²D = (1/G) Σ_g Cov_g[φ]``,
where ``μ̂(λ) = (1/G) Σ_g SNIS_g(λ)`` averages the self-normalised estimates of the groups.

- One group (``groups=None``, unconditional targets): the GDC/disco dual, ``μ̂ = E_{p_λ}[φ]``.
- One group per context (conditional targets, CDPG): ``μ̂ = E_c E_{p_{c,λ}}[φ]``, each
  context's target ``p_c ∝ a(·|c)·exp(λ·φ)`` normalised by its own ``Z_c(λ)``, which is the
  constraint the CDPG objective ``E_c KL(p_c‖π_c)`` refers to. Pooling all samples in one
  group instead (disco's ``constrain`` with a context distribution) matches the moments of
  the *joint* ``τ(c)·a(x|c)·e^{λφ}``, which weights each context by ``Z_c(λ)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

__all__ = [
    "MomentFit",
    "MomentMatchingError",
    "snis_moments",
    "check_moments_in_range",
    "check_moments_reachable",
    "fit_lambdas",
]


class MomentMatchingError(ValueError):
    """λ cannot be fitted: a feature never fires, or a desired moment is unreachable."""


@dataclass
class MomentFit:
    """The result of a fit: λ, the SNIS moments it achieves, and how well."""

    lambdas: Tensor
    achieved: Tensor
    desired: Tensor
    iterations: int
    converged: bool
    ess: float  # normalised effective sample size of the SNIS weights at λ, in (0, 1]
    n_samples: int
    names: list[str] = field(default_factory=list)
    n_groups: int = 1  # contexts whose per-context moments were averaged

    @property
    def error(self) -> float:
        """max_k |μ̂_k(λ) − μ̄_k|."""
        return float((self.achieved - self.desired).abs().max())

    def metrics(self) -> dict[str, float]:
        out = {"moment_matching/error": self.error, "moment_matching/ess": self.ess}
        for i, name in enumerate(self.names):
            out[f"moment_matching/{name}/lambda"] = float(self.lambdas[i])
            out[f"moment_matching/{name}/achieved"] = float(self.achieved[i])
            out[f"moment_matching/{name}/desired"] = float(self.desired[i])
        return out

    def report(self) -> str:
        rows = [
            f"  {n}: λ = {float(l):+.4f}, achieved E[φ] = {float(a):.6f}, desired {float(d):.6f}"
            for n, l, a, d in zip(self.names, self.lambdas, self.achieved, self.desired)
        ]
        state = "converged" if self.converged else "NOT converged"
        where = f" in {self.n_groups} contexts (per-context moments averaged)" if self.n_groups > 1 else ""
        return (
            f"moment matching {state} after {self.iterations} iterations on {self.n_samples} samples{where} "
            f"(max error {self.error:.2e}, ESS {self.ess:.3f}):\n" + "\n".join(rows)
        )


def _f64(x: Tensor | Sequence[float]) -> Tensor:
    return torch.as_tensor(x, dtype=torch.float64).detach().cpu() if not isinstance(x, Tensor) else x.detach().double().cpu()


def _dense_groups(groups: Tensor | None, m: int) -> tuple[Tensor, int]:
    """Group ids renumbered 0..G-1 (one group when None)."""
    if groups is None:
        return torch.zeros(m, dtype=torch.long), 1
    groups = torch.as_tensor(groups).reshape(-1).cpu()
    if groups.numel() != m:
        raise ValueError(f"groups has {groups.numel()} entries for {m} samples")
    uniq, dense = torch.unique(groups, return_inverse=True)
    return dense, uniq.numel()


def _group_logsumexp(log_w: Tensor, groups: Tensor, n_groups: int) -> Tensor:
    mx = torch.full((n_groups,), -math.inf, dtype=log_w.dtype).scatter_reduce(0, groups, log_w, "amax")
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    total = torch.zeros(n_groups, dtype=log_w.dtype).index_add(0, groups, torch.exp(log_w - mx[groups]))
    return mx + torch.log(total)


def _pooled_weights(log_w: Tensor, groups: Tensor, n_groups: int) -> Tensor:
    """``p_i = w_i / (G·Σ_{j∈g(i)} w_j)``: each group's SNIS weights, each group with mass 1/G."""
    return torch.exp(log_w - _group_logsumexp(log_w, groups, n_groups)[groups]) / n_groups


def snis_moments(features: Tensor, log_w0: Tensor, lambdas: Tensor, groups: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(μ̂(λ), log w)``: SNIS estimate ``Σ w_i φ_i / Σ w_i`` with ``log w_i = log_w0_i + λ·φ_i``,
    or with ``groups`` the average over groups of each group's SNIS estimate."""
    log_w = log_w0 + features @ lambdas
    g, n = _dense_groups(groups, log_w.numel())
    return _pooled_weights(log_w, g, n) @ features, log_w


def _dual(features: Tensor, log_w0: Tensor, lambdas: Tensor, desired: Tensor, groups: Tensor, n_groups: int) -> float:
    return float(_group_logsumexp(log_w0 + features @ lambdas, groups, n_groups).mean() - lambdas @ desired)


def check_moments_in_range(
    desired: Tensor | Sequence[float],
    names: Sequence[str],
    low: Sequence[float] | None = None,
    high: Sequence[float] | None = None,
) -> None:
    """Refuse a desired moment outside, or on the boundary of, its feature's range ``[low, high]``."""
    desired = _f64(desired).reshape(-1)
    for i, name in enumerate(names):
        lo = -math.inf if low is None else float(low[i])
        hi = math.inf if high is None else float(high[i])
        mu = float(desired[i])
        if not math.isfinite(mu):
            raise MomentMatchingError(f"feature {name!r}: desired moment {mu} is not finite")
        if not lo < mu < hi:
            hint = (" A moment equal to a bound is a pointwise constraint: use Pointwise(scorer) "
                    "(λ would be infinite)." if mu in (lo, hi) else "")
            raise MomentMatchingError(
                f"feature {name!r}: desired moment {mu} is not strictly inside the feature's range "
                f"[{lo}, {hi}]; no finite λ reaches it.{hint}"
            )


def check_moments_reachable(
    features: Tensor,
    desired: Tensor,
    log_w0: Tensor | None = None,
    names: Sequence[str] | None = None,
    low: Sequence[float] | None = None,
    high: Sequence[float] | None = None,
    groups: Tensor | None = None,
) -> None:
    """Refuse (MomentMatchingError) when no finite λ can match the desired moments.

    - a desired moment outside, or on the boundary of, the feature's range ``[low, high]``
      (e.g. μ̄ = 1 for a binary feature: that is a pointwise constraint, use ``Pointwise``);
    - no sample has a positive weight (the pointwise factors of a hybrid target never hold);
    - a feature that never fires (is constant) in the weighted sample (within every group);
    - a desired moment outside the open interval reachable on the sample: the values seen,
      or with groups the average of the groups' minima to the average of their maxima.
    """
    features, desired = _f64(features), _f64(desired).reshape(-1)
    m, k = features.shape
    names = list(names) if names is not None else [f"feature_{i}" for i in range(k)]
    log_w0 = torch.zeros(m, dtype=torch.float64) if log_w0 is None else _f64(log_w0)
    if desired.numel() != k:
        raise MomentMatchingError(f"{k} features but {desired.numel()} desired moments")
    check_moments_in_range(desired, names, low, high)
    alive = torch.isfinite(log_w0)
    if not alive.any():
        raise MomentMatchingError(
            f"none of the {m} moment-matching samples satisfies the pointwise factors of the target "
            "(every weight is 0); draw more samples or relax the pointwise constraint"
        )
    feats = features[alive]
    g, n_groups = _dense_groups(None if groups is None else torch.as_tensor(groups).reshape(-1)[alive], len(feats))
    for i in range(k):
        col = feats[:, i]
        gmin = torch.full((n_groups,), math.inf, dtype=col.dtype).scatter_reduce(0, g, col, "amin")
        gmax = torch.full((n_groups,), -math.inf, dtype=col.dtype).scatter_reduce(0, g, col, "amax")
        lo, hi = float(gmin.mean()), float(gmax.mean())
        mu = float(desired[i])
        if float(col.min()) == float(col.max()) or bool((gmin == gmax).all()):
            c0 = float(col.min())
            what = ("never fires (it is 0 on every sample)" if c0 == 0 and float(col.max()) == 0
                    else f"is constant ({c0}) on every sample" if float(col.max()) == c0
                    else "is constant within every context")
            raise MomentMatchingError(
                f"feature {names[i]!r} {what} among the {int(alive.sum())} moment-matching samples, so its "
                f"moment cannot be moved to {mu}. Draw more samples (moment_matching_samples), check the "
                "scorer, or start from a model that produces the feature."
            )
        if not lo < mu < hi:
            raise MomentMatchingError(
                f"feature {names[i]!r}: desired moment {mu} lies outside the values seen in the "
                f"moment-matching sample [{lo}, {hi}]{' (averages of the per-context minima and maxima)' if n_groups > 1 else ''}; "
                "no finite λ matches it on this sample. "
                "Draw more samples or refit on samples of a policy closer to the target."
            )


def _newton_step(feats: Tensor, lw0: Tensor, lam: Tensor, desired: Tensor, g: Tensor, n_groups: int,
                 w: Tensor, grad: Tensor) -> Tensor:
    """One damped Newton step on the dual (Hessian: the pooled SNIS covariance of φ), with
    Armijo backtracking; a gradient step where the Hessian cannot be solved."""
    k = feats.shape[1]
    group_mu = torch.zeros(n_groups, k, dtype=torch.float64).index_add(0, g, w[:, None] * feats) * n_groups
    centered = feats - group_mu[g]
    hess = (centered * w[:, None]).T @ centered + 1e-12 * torch.eye(k, dtype=torch.float64)
    try:
        step = -torch.linalg.solve(hess, grad)
    except RuntimeError:
        step = -grad
    if not torch.isfinite(step).all():
        step = -grad
    d0, slope, t = _dual(feats, lw0, lam, desired, g, n_groups), float(grad @ step), 1.0
    while t > 1e-12 and _dual(feats, lw0, lam + t * step, desired, g, n_groups) > d0 + 1e-4 * t * slope:
        t *= 0.5
    return lam + t * step


def _as_problem(features, desired, log_w0, names) -> tuple[Tensor, Tensor, Tensor, list[str]]:
    """``features`` as (M, k) float64, ``desired`` (k,), ``log_w0`` (M,) (0 by default), k names."""
    features = _f64(features)
    if features.dim() == 1:
        features = features[:, None]
    m, k = features.shape
    desired = _f64(desired).reshape(-1)
    log_w0 = torch.zeros(m, dtype=torch.float64) if log_w0 is None else _f64(log_w0).reshape(-1)
    names = list(names) if names is not None else [f"feature_{i}" for i in range(k)]
    return features, desired, log_w0, names


def fit_lambdas(
    features: Tensor,
    desired: Tensor | Sequence[float],
    log_w0: Tensor | None = None,
    lambdas: Tensor | Sequence[float] | None = None,
    method: str = "newton",
    lr: float = 0.5,
    iterations: int = 1000,
    tolerance: float = 1e-5,
    names: Sequence[str] | None = None,
    low: Sequence[float] | None = None,
    high: Sequence[float] | None = None,
    check: bool = True,
    groups: Tensor | None = None,
) -> MomentFit:
    """Minimise the dual ``D(λ)`` (module docstring) until ``max|μ̂(λ) − μ̄| < tolerance``.

    Args:
        features: (M, k) feature values φ(x_i) of the samples.
        desired: (k,) desired moments μ̄.
        log_w0: (M,) λ-independent log-weights ``log a − log q + Σ log b`` (0 when q = a and
            there is no pointwise factor; ``-inf`` for samples violating a pointwise factor).
        lambdas: initial λ (default 0).
        method: ``newton`` (damped Newton with backtracking: the Hessian of the dual is the
            SNIS covariance of φ; converges to 1e-10 in tens of iterations) or ``gd``
            (gradient descent ``λ ← λ − lr·(μ̂ − μ̄)``, as in GDC and disco).
        check: refuse unreachable moments first (:func:`check_moments_reachable`).
        groups: (M,) group (context) id of each sample: match the average over groups of the
            per-group normalised moments (conditional targets); None: one group.
    """
    features, desired, log_w0, names = _as_problem(features, desired, log_w0, names)
    m, k = features.shape
    if method not in ("newton", "gd"):
        raise ValueError(f"method must be 'newton' or 'gd', got {method!r}")
    if groups is not None and torch.as_tensor(groups).numel() != m:
        raise ValueError(f"groups has {torch.as_tensor(groups).numel()} entries for {m} samples")
    if check:
        check_moments_reachable(features, desired, log_w0, names, low, high, groups)
    alive = torch.isfinite(log_w0)
    feats, lw0 = features[alive], log_w0[alive]
    g, n_groups = _dense_groups(None if groups is None else torch.as_tensor(groups).reshape(-1)[alive], len(feats))
    lam = torch.zeros(k, dtype=torch.float64) if lambdas is None else _f64(lambdas).reshape(-1).clone()
    it, converged = 0, False
    for it in range(iterations + 1):
        log_w = lw0 + feats @ lam
        w = _pooled_weights(log_w, g, n_groups)
        mu = w @ feats
        grad = mu - desired
        if float(grad.abs().max()) < tolerance:
            converged = True
            break
        if it == iterations:
            break
        if method == "gd":
            lam = lam - lr * grad
            continue
        lam = _newton_step(feats, lw0, lam, desired, g, n_groups, w, grad)
    w = _pooled_weights(lw0 + feats @ lam, g, n_groups)
    ess = float(1.0 / (w**2).sum() / m)
    return MomentFit(lam, w @ feats, desired, it, converged, ess, m, names, n_groups)
