"""ValidationAtStart: the sanity check's validation is logged at step 0, from the untrained policy."""

from __future__ import annotations

import os
import sys

import lightning as L
import pytest
from lightning.pytorch.loggers import Logger

sys.path.insert(0, os.path.dirname(__file__))

import toy_exact as ex  # noqa: E402
from lit_align.callbacks import ValidationAtStart  # noqa: E402
from lit_align.data import ToyDataModule  # noqa: E402
from lit_align.methods import DPG  # noqa: E402
from lit_align.scorers import Regex  # noqa: E402
from lit_align.targets import Pointwise  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Found .* module.* in eval mode")


class Recorder(Logger):
    def __init__(self):
        super().__init__()
        self.rows: list[tuple[int, dict]] = []

    name, version = "recorder", 0

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def fit(callbacks, sanity: int) -> Recorder:
    module = DPG(target=[Pointwise(Regex("b.*d", name="bd"))], model="toy", n_samples=32, minibatch_size=16,
                 max_new_tokens=4, lr=0.5, off_policy=False, val_samples=64)
    rec = Recorder()
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_steps=4, accelerator="cpu", devices=1, logger=rec, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, val_check_interval=2,
                        check_val_every_n_epoch=None, num_sanity_val_steps=sanity, callbacks=callbacks)
    with ex.torch_threads(1):
        trainer.fit(module, ToyDataModule(steps_per_epoch=4))
    return rec


def val_rows(rec: Recorder) -> list[tuple[int, dict]]:
    return [(s, m) for s, m in rec.rows if "val/kl_policy_base" in m]


def test_sanity_validation_is_logged_at_step_0_from_the_untrained_policy():
    rows = val_rows(fit([ValidationAtStart()], sanity=-1))
    assert [s for s, _ in rows][0] == 0 and len(rows) == 3  # step 0, then the two validations
    first = rows[0][1]
    assert first["val/kl_policy_base"] == pytest.approx(0.0, abs=1e-6)  # π = a before any update
    assert 0 <= first["val/scorer/bd"] <= 1
    for _, m in rows:  # b is the target's only factor: the satisfying count is 64 × the scorer's mean
        assert m["val/n_satisfying"] == pytest.approx(64 * m["val/scorer/bd"])
    assert all(m["val/kl_policy_base"] > 1e-3 for _, m in rows[1:])  # trained: π has left a


def test_without_the_callback_the_sanity_check_is_not_logged():
    rows = val_rows(fit([], sanity=-1))
    assert len(rows) == 2 and all(m["val/kl_policy_base"] > 1e-3 for _, m in rows)


def test_no_sanity_check_warns_and_logs_nothing_at_step_0():
    with pytest.warns(UserWarning, match="nothing to log at step 0"):
        module = DPG(target=[Pointwise(Regex("b.*d", name="bd"))], model="toy", n_samples=8, minibatch_size=8,
                     max_new_tokens=4, lr=0.5, off_policy=False)
        module.val_batch_metrics = []
        ValidationAtStart().on_sanity_check_end(L.Trainer(logger=False, enable_progress_bar=False), module)
