"""Preference losses against hand-computed values (Yun et al. 2025, arXiv:2506.01523; DPO arXiv:2305.18290; IPO arXiv:2310.12036)."""

from __future__ import annotations

import math

import pytest
import torch

from lit_align.losses import kl_shaped_reward
from lit_align.preference import (
    bernoulli_kl,
    bradley_terry_loss,
    bt_probability,
    dpo_loss,
    pmle_loss,
    preference_distillation_loss,
    soft_label_accuracy,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def t(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float64)


# log π(w) = −1, log π(l) = −2, log π0(w) = log π0(l) = −1.5  ⇒  Δ_π = 1, Δ_ref = 0, h = 1
PI_W, PI_L, REF_W, REF_L = t(-1.0), t(-2.0), t(-1.5), t(-1.5)


def test_dpo_sigmoid_and_label_smoothing():
    assert float(dpo_loss(PI_W, PI_L, REF_W, REF_L, kl_coef=0.5)) == pytest.approx(softplus(-0.5), rel=1e-12)
    smoothed = 0.9 * softplus(-0.5) + 0.1 * softplus(0.5)
    assert float(dpo_loss(PI_W, PI_L, REF_W, REF_L, 0.5, label_smoothing=0.1)) == pytest.approx(smoothed, rel=1e-12)
    # the reference enters only through Δ_ref: shifting both reference log-probs changes nothing
    assert float(dpo_loss(PI_W, PI_L, REF_W + 3, REF_L + 3, 0.5)) == pytest.approx(softplus(-0.5), rel=1e-12)
    # with Δ_ref = 1 (reference already prefers w as much as π), h = 0: loss ln 2
    assert float(dpo_loss(PI_W, PI_L, t(-1.0), t(-2.0), 0.5)) == pytest.approx(math.log(2), rel=1e-12)


def test_ipo_and_hinge():
    assert float(dpo_loss(PI_W, PI_L, REF_W, REF_L, 0.5, "ipo")) == pytest.approx(0.0, abs=1e-15)  # (1 − 1/(2·0.5))²
    assert float(dpo_loss(PI_W, PI_L, REF_W, REF_L, 0.25, "ipo")) == pytest.approx(1.0, rel=1e-12)  # (1 − 2)²
    assert float(dpo_loss(PI_W, PI_L, REF_W, REF_L, 0.5, "hinge")) == pytest.approx(0.5, rel=1e-12)
    assert float(dpo_loss(PI_W, PI_L, REF_W, REF_L, 2.0, "hinge")) == 0.0


def test_dpo_gradient_matches_hand_derivation():
    w = PI_W.clone().requires_grad_(True)
    dpo_loss(w, PI_L, REF_W, REF_L, 0.5).backward()
    # d/dw −ln σ(β(w − l − Δ_ref)) = −β·σ(−βh)
    assert float(w.grad) == pytest.approx(-0.5 * sig(-0.5), rel=1e-12)


def test_pmle_value_and_gradient():
    w = PI_W.clone().requires_grad_(True)
    loss = pmle_loss(w, PI_L, gamma=0.5)
    assert float(loss.detach()) == pytest.approx(softplus(-0.5), rel=1e-12)
    loss.backward()
    assert float(w.grad) == pytest.approx(-0.5 * sig(-0.5), rel=1e-12)


def test_distillation_is_bernoulli_kl():
    q = sig(0.5)  # σ(γΔ) with γΔ = 0.5·1
    expected = 0.7 * math.log(0.7 / q) + 0.3 * math.log(0.3 / (1 - q))
    assert float(preference_distillation_loss(PI_W, PI_L, t(0.7), gamma=0.5)) == pytest.approx(expected, rel=1e-12)
    # zero when the LM's preference equals the soft label; symmetric under swapping the pair
    assert float(bernoulli_kl(t(sig(0.5)), t(0.5))) == pytest.approx(0.0, abs=1e-15)
    swapped = preference_distillation_loss(PI_L, PI_W, t(0.3), gamma=0.5)
    assert float(swapped) == pytest.approx(expected, rel=1e-12)
    # hard label 1 reduces it to PMLE
    assert float(preference_distillation_loss(PI_W, PI_L, t(1.0), 0.5)) == pytest.approx(float(pmle_loss(PI_W, PI_L, 0.5)))


def test_bradley_terry_loss_and_probability():
    assert float(bradley_terry_loss(t(2.0), t(0.5))) == pytest.approx(softplus(-1.5), rel=1e-12)
    soft = 0.8 * softplus(-1.5) + 0.2 * softplus(1.5)
    assert float(bradley_terry_loss(t(2.0), t(0.5), label=t(0.8))) == pytest.approx(soft, rel=1e-12)
    # Yun et al.: π*(a)^γ / (π*(a)^γ + π*(b)^γ)
    pa, pb, g = 0.3, 0.1, 0.5
    assert float(bt_probability(t(math.log(pa)), t(math.log(pb)), g)) == pytest.approx(pa**g / (pa**g + pb**g), rel=1e-12)


def test_soft_label_accuracy_by_hand():
    # margins > 0, < 0, = 0 against P(chosen ≻ rejected) 0.9, 0.7, 0.4: hits 0.9, 0.3, 0.5
    expected, ceiling = soft_label_accuracy(t(2.0, -1.0, 0.0), t(0.9, 0.7, 0.4))
    assert float(expected) == pytest.approx((0.9 + 0.3 + 0.5) / 3, rel=1e-12)
    assert float(ceiling) == pytest.approx((0.9 + 0.7 + 0.6) / 3, rel=1e-12)
    # ranking every pair the way its probability leans reaches the ceiling; the reverse, 1 − ceiling
    p = t(0.9, 0.7, 0.4)
    assert float(soft_label_accuracy(p - 0.5, p)[0]) == pytest.approx(float(ceiling), rel=1e-12)
    assert float(soft_label_accuracy(0.5 - p, p)[0]) == pytest.approx(1 - float(ceiling), rel=1e-12)
    # it is the mean 0/1 accuracy over fresh Bradley–Terry labels
    gen = torch.Generator().manual_seed(0)
    labels = torch.bernoulli(p.expand(200_000, 3), generator=gen)  # 1: the chosen one wins again
    hits = torch.where(t(2.0, -1.0, 0.0) > 0, labels, 1 - labels)[:, :2].mean()
    assert float(hits) == pytest.approx((0.9 + 0.3) / 2, abs=3e-3)


def test_reductions_and_batches():
    w, l_ = t(-1.0, -3.0), t(-2.0, -1.0)
    terms = pmle_loss(w, l_, 1.0, reduction="none")
    assert terms.shape == (2,)
    assert float(pmle_loss(w, l_, 1.0)) == pytest.approx(float(terms.mean()))
    assert float(pmle_loss(w, l_, 1.0, reduction="sum")) == pytest.approx(float(terms.sum()))


def test_entropy_bonus_in_shaped_reward():
    r, lp, la = t(1.0), t(-2.0), t(-1.0)
    # R − β(log π − log a) − γ log π = 1 − 0.1·(−1) − 0.5·(−2)
    assert float(kl_shaped_reward(r, lp, la, 0.1, entropy_coef=0.5)) == pytest.approx(2.1, rel=1e-12)
    assert float(kl_shaped_reward(r, lp, la, 0.1)) == pytest.approx(1.1, rel=1e-12)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: dpo_loss(t(1.0, 2.0), PI_L, REF_W, REF_L), "one shape"),
        (lambda: dpo_loss(PI_W, PI_L, REF_W, REF_L, kl_coef=0.0), "kl_coef"),
        (lambda: dpo_loss(PI_W, PI_L, REF_W, REF_L, loss_type="kto"), "loss_type"),
        (lambda: dpo_loss(PI_W, PI_L, REF_W, REF_L, label_smoothing=0.5), "label_smoothing"),
        (lambda: pmle_loss(PI_W, PI_L, gamma=0.0), "gamma"),
        (lambda: preference_distillation_loss(PI_W, PI_L, t(1.2), 0.5), r"\[0, 1\]"),
        (lambda: pmle_loss(PI_W, PI_L, 1.0, reduction="avg"), "reduction"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
