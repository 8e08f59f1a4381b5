"""Moment matching for distributional and hybrid constraints (Khalifa et al. 2021, arXiv:2012.11635; docs/toy_space.md).

Exact dual descent by enumeration of the toy space, SNIS fitting on a sample, the refusals
(feature never fires, moment out of range), the hybrid weights, and the DPG integration
(λ fitted at fit start, reported, in the checkpoint, target reached).
"""

from __future__ import annotations

import logging
import math
import os
import sys

import lightning as L
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

import toy_exact as ex  # noqa: E402
from lit_align.data import ToyDataModule  # noqa: E402
from lit_align.methods import DPG  # noqa: E402
from lit_align.moment_matching import (  # noqa: E402
    Distributional,
    MomentMatchingError,
    fit_lambdas,
    fit_target,
    snis_moments,
)
from lit_align.models.toy import ToySpace  # noqa: E402
from lit_align.scorers import Count, Regex  # noqa: E402
from lit_align.targets import EBM, Pointwise  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:Found .* module.* in eval mode"),
              pytest.mark.usefixtures("single_thread")]


@pytest.fixture(scope="module")
def toy():
    space = ToySpace(4, 4)
    return space, ex.base_log_probs(space, seed=0)


def _features(space):
    return torch.stack([Regex("b.*d")(space.texts), Count("a")(space.texts)], -1)


@pytest.mark.parametrize("method", ["newton", "gd"])
def test_exact_dual_descent_matches_moments(toy, method):
    """On the enumerated space (log_w0 = log a) the SNIS moments are the exact E_{p_λ}[φ]."""
    space, log_a = toy
    phi = _features(space)
    desired = torch.tensor([0.5, 1.5], dtype=torch.float64)
    ea = ex.expectation(log_a, phi)
    assert (ea - desired).abs().min() > 0.15  # far from the base's moments
    fit = fit_lambdas(phi, desired, log_a, method=method, tolerance=1e-10, iterations=200000, lr=0.5)
    assert fit.converged
    exact = ex.expectation(ex.target(log_a, phi @ fit.lambdas).log_p, phi)  # independent enumeration
    assert (exact - desired).abs().max() < 1e-8
    # the information projection: among all λ the fitted one minimises the dual (≡ KL to a on the family)
    assert fit.lambdas[0] > 0 and fit.lambdas[1] != 0


def test_newton_and_gd_agree_and_dual_gradient(toy):
    space, log_a = toy
    phi = _features(space)[:, :1]
    a = fit_lambdas(phi, [0.5], log_a, method="newton", tolerance=1e-12)
    b = fit_lambdas(phi, [0.5], log_a, method="gd", tolerance=1e-10, iterations=100000)
    assert a.iterations < 20
    assert float((a.lambdas - b.lambdas).abs().max()) < 1e-7
    # ∇D(λ) = E_{p_λ}[φ] − μ̄ at an arbitrary λ, checked by autograd on log Z(λ) − λμ̄
    lam = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    dual = torch.logsumexp(log_a + phi @ lam, 0) - 0.5 * lam.sum()
    (g,) = torch.autograd.grad(dual, lam)
    mu, _ = snis_moments(phi, log_a, lam.detach())
    assert float(g) == pytest.approx(float(mu) - 0.5, abs=1e-12)


def test_snis_fit_on_its_own_sample(toy):
    """On samples of a, SNIS reaches the tolerance on that sample; λ is close to the exact λ
    (biased: the SNIS weights degenerate) and closer with more samples on average."""
    space, log_a = toy
    phi = _features(space)[:, :1]
    exact = fit_lambdas(phi, [0.5], log_a, tolerance=1e-12).lambdas
    gen = torch.Generator().manual_seed(0)
    errs = {}
    for m in (512, 8192):
        idx = ex.sample_indices(log_a, m, gen)
        fit = fit_lambdas(phi[idx], [0.5], tolerance=1e-9)
        assert fit.converged and fit.error < 1e-9
        mu, _ = snis_moments(phi[idx], torch.zeros(m, dtype=torch.float64), fit.lambdas)
        assert abs(float(mu) - 0.5) < 1e-9  # the reported moment is the achieved SNIS moment
        assert 0 < fit.ess <= 1
        errs[m] = abs(float(fit.lambdas - exact))
    assert errs[512] < 0.3 and errs[8192] < 0.1


def test_refusals():
    phi = torch.tensor([[0.0], [1.0], [0.0], [1.0]], dtype=torch.float64)
    zeros = torch.zeros(4, 1, dtype=torch.float64)
    with pytest.raises(MomentMatchingError, match="never fires"):
        fit_lambdas(zeros, [0.5], names=["female"])
    with pytest.raises(MomentMatchingError, match="outside the values seen"):
        fit_lambdas(torch.tensor([[0.0], [2.0], [3.0]]), [3.5])
    with pytest.raises(MomentMatchingError, match="strictly inside the feature's range.*Pointwise"):
        fit_lambdas(phi, [1.0], low=[0.0], high=[1.0])
    with pytest.raises(MomentMatchingError, match="strictly inside"):
        fit_lambdas(phi, [1.2], low=[0.0], high=[1.0])
    with pytest.raises(MomentMatchingError, match="satisfies the pointwise factors"):
        fit_lambdas(phi, [0.5], log_w0=torch.full((4,), -math.inf))
    with pytest.raises(MomentMatchingError, match="strictly inside"):
        Distributional([Regex("x", name="x")], [1.0])  # binary scorer: μ̄ = 1 is pointwise
    d = Distributional([Regex("x", name="x")], [0.5])
    with pytest.raises(RuntimeError, match="not been fitted"):
        d.log_potential(["x"])


def test_hybrid_fit_uses_pointwise_factor(toy):
    """P = a·b·exp(λφ): the fit on samples of a weights them by b, matching E_p[φ] of the hybrid p."""
    space, log_a = toy
    b_scorer, phi_scorer = Regex("^[abc]", name="abc_start"), Regex("b.*d", name="bd")
    target = EBM([Distributional([phi_scorer], [0.6]), Pointwise(b_scorer)])
    # the whole space as the "sample", with q uniform: log a − log q = log a + const
    fit = fit_target(target, space.texts, None, log_a, torch.zeros_like(log_a), tolerance=1e-12)
    assert fit.converged
    hybrid = ex.target(log_a, torch.log(b_scorer(space.texts)) + float(fit.lambdas[0]) * phi_scorer(space.texts))
    assert abs(float(ex.expectation(hybrid.log_p, phi_scorer(space.texts))) - 0.6) < 1e-9
    assert float(ex.expectation(hybrid.log_p, b_scorer(space.texts))) == pytest.approx(1.0)
    # ignoring b would give another λ
    plain = fit_lambdas(phi_scorer(space.texts)[:, None], [0.6], log_a, tolerance=1e-12)
    assert abs(float(plain.lambdas[0] - fit.lambdas[0])) > 0.05


def _fit_trainer(module, steps, dm=None, **kw):
    L.seed_everything(0, verbose=False)
    dm = dm or ToyDataModule(steps_per_epoch=steps)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, **kw)
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        trainer.fit(module, dm)
    finally:
        log.setLevel(level)
    return trainer, dm


def test_dpg_fits_lambda_at_fit_start_and_reaches_moment(tmp_path):
    feat = Regex("b.*d", name="bd")
    dist = Distributional([feat], [0.5])
    module = DPG(target=[dist], model="toy", n_samples=256, minibatch_size=256, max_new_tokens=4, lr=0.1,
                 off_policy=False, moment_matching_samples=4096)
    trainer, dm = _fit_trainer(module, 100, default_root_dir=tmp_path, enable_checkpointing=True)
    space = dm.space
    log_a = ex.model_log_probs(space, module.engine.base)
    phi = feat(space.texts)
    assert dist.fitted and dist.last_fit.n_samples == 4096 and dist.last_fit.error < 1e-5
    lam = float(dist.coefficients[0])
    exact_lam = float(fit_lambdas(phi[:, None], [0.5], log_a, tolerance=1e-12).lambdas[0])
    assert abs(lam - exact_lam) < 0.1  # SNIS on 4096 base samples
    p = ex.target(log_a, lam * phi)
    assert abs(float(ex.expectation(p.log_p, phi)) - 0.5) < 0.02
    log_pi = ex.model_log_probs(space, module.model)
    assert abs(float(ex.expectation(log_pi, phi)) - 0.5) < 0.02  # the policy matches the moment
    assert ex.kl(p.log_p, log_pi) < 0.01
    m = trainer.callback_metrics
    assert float(m["train/moment_matching/bd/lambda"]) == pytest.approx(lam, rel=1e-6)
    assert float(m["train/moment_matching/bd/achieved"]) == pytest.approx(0.5, abs=1e-5)
    # λ is in the checkpoint, and a resumed module does not refit it
    ckpt = torch.load(trainer.checkpoint_callback.last_model_path or next(tmp_path.rglob("*.ckpt")), weights_only=False)
    assert ckpt["lit_align"]["state"]["lambdas"] == [[lam]]
    fresh = DPG(target=[Distributional([feat], [0.5])], model="toy", max_new_tokens=4)
    fresh.on_load_checkpoint(ckpt)
    d2 = fresh.target.potentials[0]
    assert d2.fitted and float(d2.coefficients[0]) == lam


def test_dpg_refuses_unfittable_target_before_training():
    module = DPG(target=[Distributional([Regex("zzz", name="never")], [0.5])], model="toy", n_samples=8,
                 minibatch_size=8, max_new_tokens=4, moment_matching_samples=64)
    with pytest.raises(MomentMatchingError, match="'never' never fires"):
        _fit_trainer(module, 2, enable_checkpointing=False)
    assert module.global_step == 0


def test_refit_on_policy_samples_resets_z():
    dist = Distributional([Regex("b.*d", name="bd")], [0.5])
    module = DPG(target=[dist], model="toy", n_samples=64, minibatch_size=64, max_new_tokens=4, lr=0.1,
                 off_policy=False, moment_matching_samples=512, moment_matching_refit_every=5)
    fits = []
    orig = module.fit_moments
    module.fit_moments = lambda model: (fits.append(model is module.model), orig(model))
    _fit_trainer(module, 7, enable_checkpointing=False)
    assert fits == [False, True]  # at fit start on the base, at step 5 on the policy
    assert module.state.z_count == 2 * 64  # Ẑ restarted at the refit (steps 5 and 6 only)
    assert dist.last_fit.error < 1e-5
