"""PHF losses (Korbak et al. 2023, arXiv:2302.08582) against values computed by hand, element by element."""

from __future__ import annotations

import math

import pytest
import torch

from lit_align.phf_losses import (awr_loss, awr_weights, mle_loss, rwr_loss, theoretical_loss, ul_aligned_weight,
                                  unlikelihood_loss, value_from_hidden)

P = [0.5, 0.25, 0.8]
LOGP = torch.log(torch.tensor([P], dtype=torch.float64))
S = torch.tensor([[0.0, 0.3, 0.0]], dtype=torch.float64)


def test_mle_is_mean_cross_entropy_over_mask():
    mask = torch.tensor([[1, 1, 0]])
    assert mle_loss(LOGP, mask).item() == pytest.approx((-math.log(0.5) - math.log(0.25)) / 2)
    assert mle_loss(LOGP, reduction="sum").item() == pytest.approx(-sum(math.log(p) for p in P))


def test_unlikelihood_hard_threshold_zero():
    # threshold 0 is a real threshold ("hard"): only segments with score 0 are likelihood targets
    alpha = 0.5
    by_hand = [-math.log(0.5), -alpha * math.log(1 - 0.25), -math.log(0.8)]
    assert unlikelihood_loss(LOGP, S, threshold=0.0, alpha=alpha).item() == pytest.approx(sum(by_hand) / 3)
    mask = torch.tensor([[1, 1, 0]])
    assert unlikelihood_loss(LOGP, S, mask, 0.0, alpha).item() == pytest.approx(sum(by_hand[:2]) / 2)


def test_unlikelihood_soft_and_released_modes():
    alpha = 0.5
    soft = [-math.log(0.5), -0.7 * math.log(0.25) - alpha * 0.3 * math.log(0.75), -math.log(0.8)]
    assert unlikelihood_loss(LOGP, S, threshold=0.0, alpha=alpha, mode="soft").item() == pytest.approx(sum(soft) / 3)
    # the released code tests `if threshold:`: 0 → soft, anything else → hard
    assert unlikelihood_loss(LOGP, S, threshold=0.0, alpha=alpha, mode="released").item() == pytest.approx(sum(soft) / 3)
    hard_02 = ul_aligned_weight(S, 0.2, "released")
    assert hard_02.tolist() == [[1.0, 0.0, 1.0]]
    with pytest.raises(ValueError, match="ul_mode"):
        ul_aligned_weight(S, 0.0, "sometimes")


def test_unlikelihood_never_infinite_when_p_is_one():
    logp = torch.zeros(1, 1, requires_grad=True)  # p = 1 on a misaligned token: log(1 − p) clamped at 1e-20
    loss = unlikelihood_loss(logp, torch.ones(1, 1), threshold=0.0, alpha=1.0)
    assert loss.item() == pytest.approx(-math.log(1e-20))


def test_awr_loss_and_gradients_by_hand():
    logp = torch.log(torch.tensor([[0.5, 0.25]], dtype=torch.float64))
    s = torch.tensor([[0.0, 0.5]], dtype=torch.float64)
    v = torch.tensor([[-0.5, -0.2]], dtype=torch.float64, requires_grad=True)
    alpha, beta = 0.5, 1.0
    terms = []
    for lp, si, vi in zip(logp[0].tolist(), s[0].tolist(), v[0].tolist()):
        r = -si
        w = math.exp((r - vi) / beta)
        terms.append(alpha * (-lp) * w + (1 - alpha) * (vi - r) ** 2)
    loss = awr_loss(logp, s, v, alpha=alpha, temperature=beta)
    assert loss.item() == pytest.approx(sum(terms) / 2)
    loss.backward()
    # the advantage is detached: the value gets only the MSE gradient (1−α)·2(V−R)/n
    expected = [(1 - alpha) * 2 * (vi + si) / 2 for vi, si in zip([-0.5, -0.2], [0.0, 0.5])]
    assert v.grad[0].tolist() == pytest.approx(expected)


def test_awr_with_alpha_one_leaves_the_value_untrained():
    # the released RWR is AWR with α = 1: its value head never moves (a quirk of the released code, docs/phf.md)
    v = torch.full((1, 3), -0.5, dtype=torch.float64, requires_grad=True)
    awr_loss(LOGP, S, v, alpha=1.0, temperature=10.0).backward()
    assert torch.count_nonzero(v.grad) == 0


def test_rwr_weights_and_released_baseline():
    beta = 10.0
    by_hand = [-math.log(p) * math.exp(-s / beta) for p, s in zip(P, [0.0, 0.3, 0.0])]
    assert rwr_loss(LOGP, S, temperature=beta).item() == pytest.approx(sum(by_hand) / 3)
    released = rwr_loss(LOGP, S, temperature=beta, baseline=-0.5).item()
    assert released == pytest.approx(sum(by_hand) / 3 * math.exp(0.5 / beta))
    v = torch.full_like(S, -0.5)
    assert released == pytest.approx(awr_loss(LOGP, S, v, alpha=1.0, temperature=beta).item())


def test_weights_are_clamped():
    w = awr_weights(torch.tensor([0.0]), torch.tensor([-1.0]), temperature=0.01, max_weight=1000.0)
    assert w.item() == 1000.0
    with pytest.raises(ValueError, match="temperature"):
        awr_weights(torch.tensor([0.0]), 0.0, temperature=0.0)


def test_value_head_and_theoretical_loss():
    h = torch.tensor([[1.0, 2.0]])
    assert value_from_hidden(h, torch.zeros(2)).item() == pytest.approx(-0.5)
    assert value_from_hidden(h, torch.tensor([1.0, 1.0])).item() == pytest.approx(-1 / (1 + math.exp(-3)))
    assert theoretical_loss(1e8, 1e9) == pytest.approx(1.69 + 406.4 / 1e8**0.34 + 410.7 / 1e9**0.28)
