"""Numerical guards: Z and importance weights in log space, non-finite losses and gradients never
applied (skipped and counted, then a clear stop), fp16 overflow, Ẑ = 0, uneven minibatches."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from lit_align import estimators
from lit_align.data import ToyDataModule
from lit_align.methods import DPG
from lit_align.models.logprobs import selected_log_probs
from lit_align.scorers import Regex
from lit_align.targets import Pointwise

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.filterwarnings("ignore")]


class Record(L.Callback):
    """The toy LM's table after every training batch, and every logged value."""

    def __init__(self) -> None:
        self.tables: list[torch.Tensor] = []
        self.logged: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, module, *args) -> None:
        self.tables.append(module.model.table.detach().clone())
        self.logged.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def toy_fit(steps: int, pattern: str = "d", callbacks=(), **kwargs) -> tuple[DPG, Record]:
    kwargs = {"n_samples": 16, "minibatch_size": 8, "max_new_tokens": 4, "lr": 0.1, "off_policy": False, **kwargs}
    L.seed_everything(0, verbose=False)
    module = DPG(model="toy", target=[Pointwise(Regex(pattern, name="b"))], **kwargs)
    record = Record()
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[record, *callbacks], accelerator="cpu", devices=1)
    trainer.fit(module, ToyDataModule(steps_per_epoch=100))
    return module, record


def poison_loss_on(monkeypatch, steps: set[int], holder: dict) -> None:
    """Make DPG's loss NaN on the given global steps."""
    import lit_align.methods.dpg as dpg

    real = dpg.dpg_loss

    def loss(*args, **kwargs):
        out = real(*args, **kwargs)
        return out * math.nan if holder["module"].global_step in steps else out

    monkeypatch.setattr(dpg, "dpg_loss", loss)


class Hold(L.Callback):
    def __init__(self, holder: dict) -> None:
        self.holder = holder

    def on_fit_start(self, trainer, module) -> None:
        self.holder["module"] = module


def test_nonfinite_loss_is_skipped_and_counted(monkeypatch):
    holder: dict = {}
    poison_loss_on(monkeypatch, {1, 2}, holder)
    module, rec = toy_fit(5, callbacks=[Hold(holder)], max_bad_steps=3)
    assert module.global_step == 5, "skipped steps count toward max_steps"
    assert module.skipped_steps == 2 and module.bad_steps == 0
    # steps 1 and 2 (0-based) changed nothing; the others did
    assert torch.equal(rec.tables[1], rec.tables[0]) and torch.equal(rec.tables[2], rec.tables[0])
    assert not torch.equal(rec.tables[3], rec.tables[2]) and not torch.equal(rec.tables[0], rec.tables[4])
    assert [r["train/step_skipped"] for r in rec.logged] == [0.0, 1.0, 1.0, 0.0, 0.0]
    assert all(torch.isfinite(t).all() for t in rec.tables)


def test_max_bad_steps_in_a_row_stop_with_a_clear_error(monkeypatch):
    holder: dict = {}
    poison_loss_on(monkeypatch, {1, 2, 3}, holder)
    with pytest.raises(FloatingPointError, match="3 consecutive steps had a non-finite loss or gradient; stopping"):
        toy_fit(6, callbacks=[Hold(holder)], max_bad_steps=3)
    assert torch.isfinite(holder["module"].model.table).all()


def test_nonfinite_gradient_with_finite_loss_is_skipped():
    class NanGrad(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            if batch_idx == 1:
                self.handle = module.model.table.register_hook(lambda g: g * math.inf)

        def on_train_batch_end(self, trainer, module, *args) -> None:
            if getattr(self, "handle", None) is not None:
                self.handle.remove()
                self.handle = None

    module, rec = toy_fit(3, callbacks=[NanGrad()])
    assert module.skipped_steps == 1
    assert torch.equal(rec.tables[1], rec.tables[0]) and not torch.equal(rec.tables[2], rec.tables[1])
    assert torch.isfinite(rec.tables[-1]).all()


def test_adam_state_stays_finite_after_a_skipped_step(monkeypatch):
    holder: dict = {}
    poison_loss_on(monkeypatch, {0}, holder)
    module, _ = toy_fit(2, callbacks=[Hold(holder)])
    state = module.trainer.optimizers[0].state
    assert all(torch.isfinite(v).all() for s in state.values() for v in s.values() if torch.is_tensor(v))


def test_z_and_importance_weights_stay_in_log_space():
    # weights e^{±1000} overflow float64 as plain numbers; in log space they are exact
    log_P = torch.tensor([1000.0, 1000.0, -math.inf], dtype=torch.float64)
    log_q = torch.tensor([-1000.0, -1000.0, -5.0], dtype=torch.float64)
    assert float(estimators.log_z_hat(log_P, log_q)) == pytest.approx(2000.0 + math.log(2 / 3))
    assert float(estimators.effective_sample_size(log_P - log_q)) == pytest.approx(2 / 3)
    module = DPG(model="toy", target=[Pointwise(Regex("d"))])
    module.state.update_z(torch.tensor([800.0, -800.0]))
    module.state.update_z(torch.tensor([-math.inf, -math.inf]))
    assert module.state.log_z == pytest.approx(800.0 - math.log(4))


def test_target_never_met_logs_z_zero_no_nan_and_no_update():
    module, rec = toy_fit(3, pattern="z")  # the toy alphabet is {a, b, c, d}
    assert module.global_step == 3 and module.steps_without_signal == 3
    assert all(torch.equal(t, rec.tables[0]) for t in rec.tables)
    last = rec.logged[-1]
    assert last["train/z"] == 0.0 and last["train/n_satisfying"] == 0.0
    assert "train/kl_target_policy" not in last
    assert all(math.isfinite(v) for r in rec.logged for v in r.values())


def test_uneven_minibatches_give_the_full_batch_step():
    """minibatch_size 5 does not divide n_samples 16 (5+5+5+1): the gradient of one batch of 16.

    (Compared before Adam, whose first step is ≈ lr·sign(g) and so amplifies rounding noise.)"""
    class Grad(L.Callback):
        def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
            self.grad = module.model.table.grad.detach().clone()

    grads = []
    for size in (16, 5):
        cb = Grad()
        toy_fit(1, callbacks=[cb], minibatch_size=size)
        grads.append(cb.grad)
    assert grads[0].abs().max() > 1e-3, "a real gradient"
    assert torch.allclose(grads[0], grads[1], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("scale", [1.0, 3e4])
def test_fp16_logits_give_float32_log_probs_without_overflow(scale):
    """fp16 logits near the top of its range (65504): log-softmax computed in fp16 would overflow."""
    gen = torch.Generator().manual_seed(0)
    logits64 = scale * torch.randn(2, 5, 11, generator=gen, dtype=torch.float64).clamp(-2, 2)
    target = torch.randint(0, 11, (2, 5), generator=gen)
    lp = selected_log_probs(logits64.half(), target)
    assert lp.dtype == torch.float32 and torch.isfinite(lp).all()
    exact = torch.log_softmax(logits64.half().double(), -1).gather(-1, target[..., None])[..., 0]
    assert torch.allclose(lp.double(), exact, atol=1e-3 * max(1.0, scale / 1e3), rtol=1e-5)


def test_grads_finite_finds_one_bad_entry_anywhere():
    from lit_align.methods.stepping import grads_finite

    params = [torch.nn.Parameter(torch.zeros(5, 7)) for _ in range(3)] + [torch.nn.Parameter(torch.zeros(2))]
    for p in params[:3]:
        p.grad = torch.randn_like(p)
    assert grads_finite(params)  # the last one has no gradient
    for bad in (float("nan"), float("inf"), float("-inf")):
        params[1].grad[3, 4] = bad
        assert not grads_finite(params)
        params[1].grad[3, 4] = 0.0
    assert grads_finite([])
