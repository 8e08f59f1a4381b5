"""GPU-only: 16-mixed, FSDP and DeepSpeed ZeRO-2/3 (docs/scale.md).

On one GPU a sharded strategy must take the same DPG steps as a plain GPU run (same scripted
samples, same metrics, same weight updates), and a sharded run must resume from its checkpoint
with the weights it saved. Skipped without CUDA (CI has none); on a GPU machine:
``python -m pytest tests/test_gpu.py -q`` (DeepSpeed cases need ``pip install 'deepspeed>=0.19.8'``;
ZeRO-3 runs with one backward pass per step; run this file in its own process: DeepSpeed ZeRO-3 patches
``torch.nn.functional.linear`` for the rest of the process).
"""

from __future__ import annotations

import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

from test_precision import STEPS, run  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore"),
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

METRICS = ("train/z", "train/ess", "train/kl_target_policy", "train/kl_policy_base", "train/scorer/has_a")


def strategy(name: str):
    if name == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy

        from lit_align.distributed import wrap_transformer_blocks

        return FSDPStrategy(sharding_strategy="FULL_SHARD", auto_wrap_policy=wrap_transformer_blocks,
                            state_dict_type="full")
    pytest.importorskip("deepspeed")
    return name  # deepspeed_stage_2, deepspeed_stage_3


def one_backward(name: str) -> dict:
    """ZeRO-3 takes one backward pass per step (docs/scale.md): the whole batch in one minibatch."""
    return {"minibatch_size": 16} if name == "deepspeed_stage_3" else {}


@pytest.fixture(scope="module")
def gpu_fp32():
    return run("32-true", accelerator="gpu")


def test_16_mixed_dpg_is_finite_and_close_to_fp32(gpu_fp32):
    _, ref, ref_delta = gpu_fp32
    module, hist, delta = run("16-mixed", accelerator="gpu", steps=6)
    # the GradScaler's first steps may overflow (skipped, scale lowered); the rest update the weights
    assert len(hist) == 6 and module.skipped_steps < 6 and module.bad_steps == 0
    assert all(math.isfinite(v) for h in hist for v in h.values())
    for name in METRICS:  # step 1: same weights and samples as the fp32 run
        assert math.isclose(hist[0][name], ref[0][name], rel_tol=0.02, abs_tol=1e-3), (name, hist[0][name], ref[0][name])
    assert torch.isfinite(delta).all() and delta.abs().max() > 1e-3
    samples = module.sample([""], n=4)
    with torch.autocast("cuda", dtype=torch.float16):
        assert module.policy.token_log_probs(module.model, samples).dtype == torch.float32


@pytest.mark.parametrize("name", ["fsdp", "deepspeed_stage_2", "deepspeed_stage_3"])
def test_sharded_strategy_takes_the_plain_gpu_steps(gpu_fp32, name):
    _, ref, ref_delta = gpu_fp32
    module, hist, delta = run("32-true", accelerator="gpu", strategy=strategy(name), **one_backward(name))
    assert len(hist) == STEPS and module.skipped_steps == 0
    for t, (a, b) in enumerate(zip(hist, ref)):
        for metric in METRICS:
            assert math.isclose(a[metric], b[metric], rel_tol=1e-3, abs_tol=1e-5), (t, metric, a[metric], b[metric])
    assert delta.shape == ref_delta.shape and ref_delta.abs().max() > 1e-3
    torch.testing.assert_close(delta, ref_delta, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["fsdp", "deepspeed_stage_2", "deepspeed_stage_3"])
def test_sharded_run_resumes_with_the_weights_it_saved(tmp_path, name):
    first, _, _ = run("32-true", accelerator="gpu", strategy=strategy(name), steps=2, **one_backward(name))
    saved = first.end_params
    ckpt = str(tmp_path / "last.ckpt")
    first.trainer.save_checkpoint(ckpt)
    resumed, hist, _ = run("32-true", accelerator="gpu", strategy=strategy(name), steps=3, ckpt_path=ckpt,
                           **one_backward(name))
    assert resumed.trainer.global_step == 3 and len(hist) == 1  # only the third step ran
    assert saved.keys() == resumed.start_params.keys()
    for k, v in saved.items():
        torch.testing.assert_close(resumed.start_params[k].float().cpu(), v.float().cpu(), rtol=0, atol=0)
