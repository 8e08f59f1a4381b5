"""Diagnostics (Korbak et al. 2022, arXiv:2206.00761): BLEU/self-BLEU against NLTK's values, distinct-n, the
per-sample gradient variance (checked against an independent computation), advantage
statistics, the callbacks inside a toy run, and the proposal-update rule."""

from __future__ import annotations

import logging
import os
import sys

import lightning as L
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

import toy_exact as ex  # noqa: E402
from lit_align.callbacks import AdvantageStatistics, Diversity, GradientVariance  # noqa: E402
from lit_align.callbacks.diagnostics import (  # noqa: E402
    advantage_statistics,
    distinct_n,
    per_sample_gradient_variance,
    self_bleu,
    sentence_bleu,
    tokenize,
)
from lit_align.data import ToyDataModule  # noqa: E402
from lit_align.losses import dpg_loss  # noqa: E402
from lit_align.methods import DPG  # noqa: E402
from lit_align.scorers import Regex  # noqa: E402
from lit_align.targets import Pointwise  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Found .* module.* in eval mode")

TEXTS = ["the cat sat on the mat today", "a cat sat on a mat", "the dog ran in the park and barked",
         "the cat is on the mat", "zebra"]
# nltk 3.10.4 sentence_bleu(refs, hyp, weights=(1/n,)*n, smoothing_function=SmoothingFunction().method1)
# with each text against the others (tokenised as here)
NLTK_BLEU = {
    3: [0.658633756, 0.405480133, 0.0390448333, 0.5, 0.0],
    4: [0.2907153685, 0.2171185208, 0.0330316432, 0.2540663741, 0.0],
    5: [0.1885168359, 0.1618644583, 0.0312415192, 0.1835488858, 0.0],
}


@pytest.mark.parametrize("n", [3, 4, 5])
def test_sentence_bleu_matches_nltk(n):
    toks = [tokenize(t) for t in TEXTS]
    got = [sentence_bleu(toks[:i] + toks[i + 1:], h, n) for i, h in enumerate(toks)]
    assert got == pytest.approx(NLTK_BLEU[n], abs=1e-9)
    assert self_bleu(TEXTS, n) == pytest.approx(sum(NLTK_BLEU[n]) / len(TEXTS), abs=1e-9)


def test_bleu_edge_cases_and_distinct():
    assert sentence_bleu([["a", "b", "c", "d"]], ["a", "b", "c", "d"]) == pytest.approx(1.0)
    assert self_bleu(["same words here again"] * 3, 4) == pytest.approx(1.0)
    assert self_bleu(["only one"], 4) == 0.0
    texts = ["a a a a", "a b c d"]
    assert distinct_n(texts, 1) == pytest.approx((1 / 4 + 4 / 4) / 2)  # |set| / #tokens
    assert distinct_n(texts, 2) == pytest.approx((1 / 4 + 3 / 4) / 2)
    assert distinct_n(texts, 2, "ngrams") == pytest.approx((1 / 3 + 3 / 3) / 2)  # |set| / #n-grams
    assert distinct_n(texts, 1, "corpus") == pytest.approx(4 / 8)
    assert distinct_n(["", "x"], 2) == 0.0
    with pytest.raises(ValueError):
        distinct_n(texts, 1, "nope")


def test_gradient_variance_formula():
    g = torch.tensor([[1.0, 0.0], [3.0, 2.0], [2.0, 4.0]])
    stats = per_sample_gradient_variance(g)
    mean = g.mean(0)
    expected = float(((g - mean) ** 2).sum(-1).mean())  # E‖g − ḡ‖² = E‖g‖² − ‖ḡ‖²
    assert stats["grad/variance"] == pytest.approx(expected)
    assert stats["grad/mean_l2"] == pytest.approx(float(mean.norm()))


def test_advantage_statistics():
    a = torch.tensor([-1.0, 0.5, 2.0, -0.5])
    s = advantage_statistics(a, torch.tensor([False, True, True, False]))
    assert s["advantage/mean"] == pytest.approx(0.25) and s["advantage/max"] == 2.0
    assert s["advantage/abs"] == pytest.approx(1.0) and s["advantage/filtered"] == pytest.approx(1.25)
    assert s["advantage/num_satisfying"] == 2 and s["advantage/std"] == pytest.approx(float(a.std()))


class _Capture(L.Callback):
    """Recomputes per-sample gradients independently, at the same point as GradientVariance."""

    def __init__(self):
        self.expected = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % 2:
            return
        s = pl_module.last_rollout.samples
        log_P = pl_module.target.log_score(pl_module.engine.base_log_prob(s), s.texts).double()
        grads = []
        for i in range(4):
            pl_module.model.zero_grad()
            mb = s.select(slice(i, i + 1))
            lp = pl_module.policy.token_log_probs(pl_module.model, mb).sum(-1)
            dpg_loss(lp, log_P[i:i + 1], lp.detach(), pl_module.state.log_z).backward()
            grads.append(pl_module.model.table.grad.reshape(-1).clone())
        pl_module.model.zero_grad(set_to_none=True)
        g = torch.stack(grads).double()
        self.expected[trainer.global_step] = float((g * g).sum(-1).mean() - (g.mean(0) ** 2).sum())


def test_callbacks_in_a_toy_run():
    module = DPG(target=[Pointwise(Regex("b.*d", name="bd"))], model="toy", n_samples=32, minibatch_size=16,
                 max_new_tokens=4, lr=0.1, off_policy=False)
    capture = _Capture()
    logged = {}

    class Grab(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            logged[trainer.global_step] = {k: float(v) for k, v in trainer.callback_metrics.items()}

    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_steps=4, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[GradientVariance(every_n_steps=2, n_samples=4), AdvantageStatistics(),
                                   Diversity(every_n_steps=2, distinct=(1, 2), self_bleu_n=(3,)), capture, Grab()])
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with ex.torch_threads(1):
        trainer.fit(module, ToyDataModule(steps_per_epoch=4))
    for step in (2, 4):
        assert logged[step]["train/grad/variance"] == pytest.approx(capture.expected[step], rel=1e-5)
        assert capture.expected[step] > 0
        assert 0 < logged[step]["train/diversity/distinct_1"] <= 1
        assert "train/diversity/self_bleu_3" in logged[step]
    assert "train/advantage/std" in logged[4] and "train/advantage/filtered" in logged[4]
    assert all(p.grad is None for p in module.model.parameters())  # no gradient left behind


@pytest.mark.parametrize("metric", ["kl", "tv", "js"])
def test_proposal_update_never_accepts_higher_divergence(metric):
    """The rule q ← π fires iff the windowed estimate D(p‖π) is below D(p‖q); when it does not
    fire the proposal's weights are untouched, when it does they are the policy's."""
    module = DPG(target=[Pointwise(Regex("b.*d"))], model="toy", off_policy=True, proposal_update_interval=1,
                 proposal_update_metric=metric, max_new_tokens=4)
    module.configure_model()
    gen = torch.Generator().manual_seed(0)
    accepted = 0
    for trial in range(40):
        with torch.no_grad():
            module.model.table.add_(0.1 * torch.randn(module.model.table.shape, generator=gen))
        before = module.proposal.table.detach().clone()
        d_pi, d_q = torch.rand(2, generator=gen).tolist()
        metrics = {f"{metric}_target_policy": d_pi, f"{metric}_target_proposal": d_q,
                   # the other metrics disagree on purpose: only the chosen one may decide
                   **{f"{m}_target_policy": d_q for m in ("kl", "tv", "js") if m != metric},
                   **{f"{m}_target_proposal": d_pi for m in ("kl", "tv", "js") if m != metric}}
        updated = module.maybe_update_proposal(metrics)
        assert updated == (d_pi < d_q)
        if updated:
            accepted += 1
            torch.testing.assert_close(module.proposal.table, module.model.table)
        else:
            torch.testing.assert_close(module.proposal.table, before)
    assert 5 < accepted < 35
