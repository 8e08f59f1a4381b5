"""Learning-rate schedules (lit_align.schedules): hand-computed factors, and the factor a fit applies."""

from __future__ import annotations

import math

import lightning as L
import pytest

from lit_align.data import ToyDataModule
from lit_align.methods import DPG
from lit_align.schedules import lr_factor
from lit_align.scorers import Regex
from lit_align.targets import Pointwise

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.filterwarnings("ignore:Found .* module.* in eval mode")]


def test_factors_by_hand():
    f = lr_factor("cosine", 2, 0.0, 10)  # warm-up 1/3, 2/3; then cos over steps 2..10
    assert [f(0), f(1), f(2)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert f(6) == pytest.approx(0.5) and f(10) == pytest.approx(0.0)
    assert f(4) == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 8)))
    g = lr_factor("linear", 0, 0.0, 10)
    assert [g(0), g(5), g(10)] == pytest.approx([1.0, 0.5, 0.0])
    assert lr_factor("linear", 0, 0.1, 100)(5) == pytest.approx(6 / 11)  # warm-up from the ratio: 10 steps
    c = lr_factor("constant", 3, 0.0, 10)
    assert [c(0), c(2), c(3), c(9)] == pytest.approx([0.25, 0.75, 1.0, 1.0])
    assert lr_factor("cosine", 0, 0.0, -1)(50) == 1.0  # no known end: no decay


def test_unknown_schedule_is_refused_before_loading():
    with pytest.raises(ValueError, match="lr_schedule must be one of constant, linear, cosine"):
        DPG(model="toy", target=[Pointwise(Regex("b", name="b"))], lr_schedule="step")


def test_a_fit_applies_the_cosine_factor():
    seen = []

    class LR(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, *args):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    module = DPG(target=[Pointwise(Regex("b.*d", name="bd"))], model="toy", n_samples=8, minibatch_size=8,
                 max_new_tokens=4, lr=0.1, off_policy=False, warmup_steps=1, lr_schedule="cosine")
    trainer = L.Trainer(max_steps=5, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[LR()])
    trainer.fit(module, ToyDataModule(steps_per_epoch=5))
    f = lr_factor("cosine", 1, 0.0, 5)
    assert seen == pytest.approx([0.1 * f(s) for s in range(5)])
    assert seen[1] == pytest.approx(0.1) and seen[-1] < seen[1]
