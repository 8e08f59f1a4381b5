"""PerfMonitor: per-phase times add up to the step, token counts (hence FLOPs) equal a hand count."""

from __future__ import annotations

import logging
import os
import sys

import lightning as L
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import toy_exact as ex  # noqa: E402
from lit_align.callbacks import PerfMonitor  # noqa: E402
from lit_align.data import ToyDataModule  # noqa: E402
from lit_align.methods import DPG  # noqa: E402
from lit_align.scorers import Regex  # noqa: E402
from lit_align.targets import Pointwise  # noqa: E402
from lit_align.timing import PhaseTimer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Found .* module.* in eval mode")


def test_dpg_step_phases_and_flops():
    module = DPG(target=[Pointwise(Regex("b", name="b"))], model="toy", n_samples=16, minibatch_size=8,
                 max_new_tokens=4, lr=0.1, off_policy=False)
    logged, counted = {}, {}

    class Grab(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            # runs after PerfMonitor (callbacks run in order): its metrics are in callback_metrics
            logged[trainer.global_step] = {k: float(v) for k, v in trainer.callback_metrics.items()}
            s = pl_module.last_rollout.samples
            toks = int(s.prompt_mask.sum() + s.completion_mask.sum())
            # sampling: each completion token + the prompt once per context; base log-probs: all tokens;
            # training: all tokens once (forward + backward)
            prompt_once = int(s.prompt_mask.sum()) // 16
            counted[trainer.global_step] = (2 * (int(s.completion_mask.sum()) + prompt_once) + 2 * toks
                                            + 6 * toks)

    monitor = PerfMonitor(peak_tflops=1.0)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[monitor, Grab()])
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with ex.torch_threads(1):
        trainer.fit(module, ToyDataModule(steps_per_epoch=3))
    n_params = sum(p.numel() for p in module.model.parameters())
    for step in (1, 2, 3):
        m = {k[5:]: v for k, v in logged[step].items() if k.startswith("perf/")}
        phases = ["sampling_s", "log_probs_s", "scoring_s", "forward_backward_s", "optimizer_s"]
        assert all(m[p] > 0 for p in phases), m
        assert sum(m[p] for p in phases) + m["other_s"] == pytest.approx(m["step_s"], rel=1e-4)
        assert m["samples_per_s"] == pytest.approx(16 / m["step_s"], rel=1e-4)
        assert m["tflops"] == pytest.approx(counted[step] * n_params / m["step_s"] / 1e12, rel=1e-4)
        assert m["mfu"] == pytest.approx(m["tflops"])  # peak 1 TFLOP/s


def test_disabled_timer_records_nothing():
    t = PhaseTimer()
    with t("sampling"):
        pass
    t.count("train", 10)
    assert dict(t.seconds) == {} and dict(t.tokens) == {}
    t.enabled = True
    with t("sampling"):
        pass
    t.count("train", 10)
    t.count("forward", 5)
    assert t.seconds["sampling"] > 0 and t.flops_per_param() == 6 * 10 + 2 * 5
