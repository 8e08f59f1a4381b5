"""Distributional and hybrid constraints: fitting λ by moment matching (methods.md §1.1, §9.2).

The information projection of the base LM ``a`` onto ``{c : E_c[φ] = μ̄}`` is the
exponential family ``p_λ(x) ∝ a(x)·exp(λ·φ(x))`` (times pointwise factors ``b(x)`` for a
hybrid constraint), with λ the minimiser of the convex dual

    D(λ) = log Z(λ) − λ·μ̄,        ∇D = E_{p_λ}[φ] − μ̄,        ∇²D = Cov_{p_λ}[φ].

``E_{p_λ}[φ]`` is estimated by self-normalised importance sampling (SNIS) on a fixed
sample ``x_1..x_M ~ q``: ``w_i ∝ exp(log a_i − log q_i + Σ log b_i + λ·φ_i)``. With ``q = a``
the weights are ``b_i·exp(λ·φ_i)``. Passing the whole (enumerated) space with
``log_w0 = log a`` makes the same function exact.

SNIS is biased when μ̄ is far from ``E_q[φ]`` (the weights degenerate, §1.1 caveat); the
DPG option ``moment_matching_refit_every`` re-fits on samples of the current policy, which
moves q toward ``p_λ``.

Usage in a target (config: ``class_path: lit_align.moment_matching.Distributional``)::

    target = [Distributional([female], [0.5]), Pointwise(sports)]       # hybrid

λ starts unfitted; :class:`~lit_align.methods.DPG` fits it at fit start (before the first
step) on ``moment_matching_samples`` samples of the base, logs the achieved moments, and
stores λ in the checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from lit_align.scorers.base import Scorer
from lit_align.targets import EBM, Exponential

__all__ = [
    "Distributional",
    "MomentFit",
    "MomentMatchingError",
    "snis_moments",
    "check_moments_in_range",
    "check_moments_reachable",
    "fit_lambdas",
    "fit_target",
    "distributional_potentials",
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
        return (
            f"moment matching {state} after {self.iterations} iterations on {self.n_samples} samples "
            f"(max error {self.error:.2e}, ESS {self.ess:.3f}):\n" + "\n".join(rows)
        )


def _f64(x: Tensor | Sequence[float]) -> Tensor:
    return torch.as_tensor(x, dtype=torch.float64).detach().cpu() if not isinstance(x, Tensor) else x.detach().double().cpu()


def snis_moments(features: Tensor, log_w0: Tensor, lambdas: Tensor) -> tuple[Tensor, Tensor]:
    """``(μ̂(λ), log w)``: SNIS estimate ``Σ w_i φ_i / Σ w_i`` with ``log w_i = log_w0_i + λ·φ_i``."""
    log_w = log_w0 + features @ lambdas
    weights = torch.softmax(log_w, 0)
    return weights @ features, log_w


def _dual(features: Tensor, log_w0: Tensor, lambdas: Tensor, desired: Tensor) -> float:
    return float(torch.logsumexp(log_w0 + features @ lambdas, 0) - lambdas @ desired)


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
) -> None:
    """Refuse (MomentMatchingError) when no finite λ can match the desired moments.

    - a desired moment outside, or on the boundary of, the feature's range ``[low, high]``
      (e.g. μ̄ = 1 for a binary feature: that is a pointwise constraint, use ``Pointwise``);
    - no sample has a positive weight (the pointwise factors of a hybrid target never hold);
    - a feature that never fires (is constant) in the weighted sample;
    - a desired moment outside the open interval of values seen in the sample.
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
    for i in range(k):
        col = feats[:, i]
        lo, hi = float(col.min()), float(col.max())
        mu = float(desired[i])
        if lo == hi:
            what = "never fires (it is 0 on every sample)" if lo == 0 else f"is constant ({lo}) on every sample"
            raise MomentMatchingError(
                f"feature {names[i]!r} {what} among the {int(alive.sum())} moment-matching samples, so its "
                f"moment cannot be moved to {mu}. Draw more samples (moment_matching_samples), check the "
                "scorer, or start from a model that produces the feature."
            )
        if not lo < mu < hi:
            raise MomentMatchingError(
                f"feature {names[i]!r}: desired moment {mu} lies outside the values seen in the "
                f"moment-matching sample [{lo}, {hi}]; no finite λ matches it on this sample. "
                "Draw more samples or refit on samples of a policy closer to the target."
            )


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
) -> MomentFit:
    """Minimise the dual ``D(λ) = log Σ_i w0_i e^{λ·φ_i} − λ·μ̄`` until ``max|μ̂(λ) − μ̄| < tolerance``.

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
    """
    features = _f64(features)
    if features.dim() == 1:
        features = features[:, None]
    m, k = features.shape
    desired = _f64(desired).reshape(-1)
    log_w0 = torch.zeros(m, dtype=torch.float64) if log_w0 is None else _f64(log_w0).reshape(-1)
    names = list(names) if names is not None else [f"feature_{i}" for i in range(k)]
    if method not in ("newton", "gd"):
        raise ValueError(f"method must be 'newton' or 'gd', got {method!r}")
    if check:
        check_moments_reachable(features, desired, log_w0, names, low, high)
    alive = torch.isfinite(log_w0)
    feats, lw0 = features[alive], log_w0[alive]
    lam = torch.zeros(k, dtype=torch.float64) if lambdas is None else _f64(lambdas).reshape(-1).clone()
    it, converged = 0, False
    for it in range(iterations + 1):
        mu, log_w = snis_moments(feats, lw0, lam)
        grad = mu - desired
        if float(grad.abs().max()) < tolerance:
            converged = True
            break
        if it == iterations:
            break
        if method == "gd":
            lam = lam - lr * grad
            continue
        w = torch.softmax(log_w, 0)
        centered = feats - mu
        hess = (centered * w[:, None]).T @ centered
        hess = hess + 1e-12 * torch.eye(k, dtype=torch.float64)
        try:
            step = -torch.linalg.solve(hess, grad)
        except RuntimeError:
            step = -grad
        if not torch.isfinite(step).all():
            step = -grad
        d0, slope, t = _dual(feats, lw0, lam, desired), float(grad @ step), 1.0
        while t > 1e-12 and _dual(feats, lw0, lam + t * step, desired) > d0 + 1e-4 * t * slope:
            t *= 0.5
        lam = lam + t * step
    mu, log_w = snis_moments(feats, lw0, lam)
    ess = float(torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)) / m)
    return MomentFit(lam, mu, desired, it, converged, ess, m, names)


# ---------------------------------------------------------------------------- the potential


class Distributional(Exponential):
    """``exp(λ·φ(x))`` whose λ is fitted so that the target's moments are ``E_p[φ] = μ̄``.

    Args:
        scorers: the features φ_k (any real-valued scorers; their ``low``/``high`` bound
            the reachable moments).
        moments: the desired moments μ̄_k, strictly inside each feature's range.
        coefficients: a known λ (skips fitting); None (default) leaves λ to be fitted.
    """

    def __init__(
        self,
        scorers: Sequence[Scorer],
        moments: Sequence[float],
        coefficients: Sequence[float] | None = None,
    ) -> None:
        scorers = list(scorers)
        super().__init__(scorers, coefficients if coefficients is not None else [0.0] * len(scorers))
        self.moments = torch.as_tensor(list(moments), dtype=torch.float64).reshape(-1)
        if self.moments.numel() != len(self.features):
            raise ValueError(f"Distributional: {len(self.features)} scorers but {self.moments.numel()} moments")
        if len({s.name for s in self.features}) != len(self.features):
            raise ValueError("Distributional: scorers need distinct names (set `name:`), they label λ and moments")
        self.fitted = coefficients is not None
        self.last_fit: MomentFit | None = None
        check_moments_in_range(self.moments, self.names, self.low, self.high)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.features]

    @property
    def low(self) -> list[float]:
        return [float(s.low) for s in self.features]

    @property
    def high(self) -> list[float]:
        return [float(s.high) for s in self.features]

    def set_lambdas(self, lambdas: Tensor | Sequence[float]) -> None:
        self.coefficients = _f64(lambdas).reshape(-1).clone()
        self.fitted = True

    def log_potential(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> Tensor:
        if not self.fitted:
            raise RuntimeError(
                f"Distributional({self.names}): λ has not been fitted. DPG fits it at fit start; "
                "otherwise call lit_align.moment_matching.fit_target(...) or give `coefficients`."
            )
        return super().log_potential(texts, contexts)

    def __repr__(self) -> str:
        return f"Distributional({self.names}, moments={self.moments.tolist()}, λ={self.coefficients.tolist()})"


def distributional_potentials(target: EBM) -> list[Distributional]:
    return [p for p in target.potentials if isinstance(p, Distributional)]


def fit_target(
    target: EBM,
    texts: Sequence[str],
    contexts: Sequence[str] | None,
    log_a: Tensor,
    log_q: Tensor,
    gather=None,
    **kwargs,
) -> MomentFit:
    """Fit λ of every :class:`Distributional` potential of ``target`` jointly, on samples of q.

    ``log_a``/``log_q``: base and proposal log-probs of the samples (equal when q = a). The
    other potentials (pointwise factors of a hybrid target) enter the λ-free weights.
    ``gather`` (a per-sample tensor → all-ranks tensor function) makes every rank fit on the
    union of the ranks' samples, so that all ranks get the same λ. Keyword arguments go to
    :func:`fit_lambdas`. Sets λ on the potentials (also when the fit raises for
    non-convergence it does not change them) and returns the fit.
    """
    dists = distributional_potentials(target)
    if not dists:
        raise ValueError("fit_target: the target has no Distributional potential")
    feats = torch.cat([d.features_matrix(texts, contexts) for d in dists], dim=-1)
    log_w0 = _f64(log_a) - _f64(log_q)
    for p in target.potentials:
        if not isinstance(p, Distributional):
            log_w0 = log_w0 + _f64(p.log_potential(texts, contexts))
    if gather is not None:
        feats, log_w0 = gather(feats), gather(log_w0)
    desired = torch.cat([d.moments for d in dists])
    init = torch.cat([d.coefficients for d in dists])
    names = [n for d in dists for n in d.names]
    low = [x for d in dists for x in d.low]
    high = [x for d in dists for x in d.high]
    fit = fit_lambdas(feats, desired, log_w0, init, names=names, low=low, high=high, **kwargs)
    if not fit.converged:
        raise MomentMatchingError(
            "moment matching did not reach its tolerance (the desired moments may be jointly "
            "unreachable on this sample, e.g. outside the convex hull of the features):\n" + fit.report()
        )
    start = 0
    for d in dists:
        k = len(d.features)
        d.set_lambdas(fit.lambdas[start : start + k])
        d.last_fit = fit
        start += k
    return fit


# --------------------------------------------------------------- with a LightningModule's models


@torch.no_grad()
def fit_module_target(
    module,
    model=None,
    contexts: Sequence[str] | None = None,
    n_samples: int = 10240,
    batch_size: int = 512,
    strict: bool = True,
    **kwargs,
) -> MomentFit | None:
    """Draw ``n_samples`` from ``model`` (default: the module's frozen base ``a``) and fit λ.

    ``module`` is a :class:`~lit_align.methods.BasePolicyModule` (it provides sampling and
    the base log-probs). Samples from another model (e.g. the current policy, to reduce the
    SNIS bias) are importance-weighted with ``log a − log q``. ``contexts`` defaults to the
    data module's ``prompt`` (``""``: unconditional, from BOS); with several contexts the
    samples are split evenly among them and pooled (disco sums over contexts).

    With ``strict=False`` an unfittable target (a feature that never fires, e.g. a random
    tiny model in a smoke test) warns and keeps the current λ instead of raising.
    """
    import warnings

    if n_samples < 1 or batch_size < 1:
        raise ValueError("moment matching needs n_samples ≥ 1 and batch_size ≥ 1")
    base_model = module.base_model
    model = base_model if model is None else model
    if contexts is None:
        dm = getattr(getattr(module, "_trainer", None), "datamodule", None)
        contexts = [getattr(dm, "prompt", "")]
    contexts = list(contexts) or [""]
    per_call = max(1, batch_size // len(contexts))
    texts, ctxs, log_a, log_q = [], [], [], []
    drawn = 0
    while drawn < n_samples:
        n = min(per_call, -(-(n_samples - drawn) // len(contexts)))
        samples = module.sample(contexts, n=n, model=model)
        texts += samples.texts
        ctxs += samples.contexts
        lq = samples.log_q.double() if module.policy.exact else module.log_prob_no_grad(model, samples).double()
        log_q.append(lq.cpu())
        log_a.append(lq.cpu() if model is base_model else module.base_log_prob(samples).double().cpu())
        drawn += len(samples)
    gather = module.gather if getattr(module, "_trainer", None) is not None else None
    try:
        return fit_target(module.target, texts, ctxs, torch.cat(log_a), torch.cat(log_q), gather=gather, **kwargs)
    except MomentMatchingError as err:
        if strict:
            raise
        warnings.warn(f"moment matching failed; keeping λ = {[d.coefficients.tolist() for d in distributional_potentials(module.target)]} "
                      f"because moment_matching_strict is false: {err}", stacklevel=2)
        for d in distributional_potentials(module.target):
            d.fitted = True
        return None
