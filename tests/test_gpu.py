"""GPU-only: 16-mixed, FSDP and DeepSpeed ZeRO-2/3 (docs/scale.md).

On one GPU a sharded strategy must take the same DPG steps as a plain GPU run (same scripted
samples, same metrics, same weight updates), and a sharded run must resume from its checkpoint
with the weights it saved. Skipped without CUDA (CI has none); on a GPU machine:
``python -m pytest tests/test_gpu.py -q`` (DeepSpeed cases need ``pip install deepspeed``).
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


@pytest.fixture(scope="module")
def gpu_fp32():
    return run("32-true", accelerator="gpu")


def test_16_mixed_dpg_is_finite_and_close_to_fp32(gpu_fp32):
    _, ref, ref_delta = gpu_fp32
    module, hist, delta = run("16-mixed", accelerator="gpu")
    assert len(hist) == STEPS and module.skipped_steps == 0
    for t, (a, b) in enumerate(zip(hist, ref)):
        assert all(math.isfinite(v) for v in a.values()), a
        for name in METRICS:
            assert math.isclose(a[name], b[name], rel_tol=0.02, abs_tol=1e-3), (t, name, a[name], b[name])
    cos = torch.nn.functional.cosine_similarity(delta, ref_delta, dim=0)
    assert cos > 0.95, float(cos)
    samples = module.sample([""], n=4)
    with torch.autocast("cuda", dtype=torch.float16):
        assert module.policy.token_log_probs(module.model, samples).dtype == torch.float32


@pytest.mark.parametrize("name", ["fsdp", "deepspeed_stage_2", "deepspeed_stage_3"])
def test_sharded_strategy_takes_the_plain_gpu_steps(gpu_fp32, name):
    _, ref, ref_delta = gpu_fp32
    module, hist, delta = run("32-true", accelerator="gpu", strategy=strategy(name))
    assert len(hist) == STEPS and module.skipped_steps == 0
    for t, (a, b) in enumerate(zip(hist, ref)):
        for metric in METRICS:
            assert math.isclose(a[metric], b[metric], rel_tol=1e-3, abs_tol=1e-5), (t, metric, a[metric], b[metric])
    assert delta.shape == ref_delta.shape and ref_delta.abs().max() > 1e-3
    torch.testing.assert_close(delta, ref_delta, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["fsdp", "deepspeed_stage_3"])
def test_sharded_run_resumes_with_the_weights_it_saved(tmp_path, name):
    first, _, _ = run("32-true", accelerator="gpu", strategy=strategy(name), steps=2)
    saved = first.end_params
    ckpt = str(tmp_path / "last.ckpt")
    first.trainer.save_checkpoint(ckpt)
    resumed, hist, _ = run("32-true", accelerator="gpu", strategy=strategy(name), steps=3, ckpt_path=ckpt)
    assert resumed.trainer.global_step == 3 and len(hist) == 1  # only the third step ran
    assert saved.keys() == resumed.start_params.keys()
    for k, v in saved.items():
        torch.testing.assert_close(resumed.start_params[k].float().cpu(), v.float().cpu(), rtol=0, atol=0)
