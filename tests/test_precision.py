"""Precision: log-probs are float32 (importance weights float64) whatever the training precision;
DPG under ``bf16-mixed`` stays finite and close to fp32; ``bf16-true`` trains bf16 weights."""

from __future__ import annotations

import dataclasses

import math
import os
import sys

import lightning as L
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

from lit_align.data.prompts import PromptDataModule  # noqa: E402
from lit_align.methods import DPG  # noqa: E402
from lit_align.models.loading import byte_tokenizer  # noqa: E402
from lit_align.models.logprobs import selected_log_probs  # noqa: E402
from lit_align.models.lora import unwrapped_name  # noqa: E402
from lit_align.scorers import Regex  # noqa: E402
from lit_align.targets import Pointwise  # noqa: E402
from scripted import letter_pool, scripted  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.usefixtures("single_thread")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_selected_log_probs_match_log_softmax_in_float64(dtype):
    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(3, 7, 50, generator=gen)).to(dtype).requires_grad_(True)
    target = torch.randint(0, 50, (3, 7), generator=gen)
    weight = torch.randn(3, 7, generator=gen, dtype=torch.float64)
    out = selected_log_probs(logits, target, chunk_rows=4)  # 21 rows in chunks of 4
    ref = torch.log_softmax(logits.double(), -1).gather(-1, target[..., None]).squeeze(-1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5)
    (grad,) = torch.autograd.grad((out.double() * weight).sum(), logits)
    (grad_ref,) = torch.autograd.grad((ref * weight).sum(), logits)
    assert grad.dtype == dtype
    torch.testing.assert_close(grad.double(), grad_ref.to(dtype).double(), rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        assert torch.equal(selected_log_probs(logits, target), selected_log_probs(logits, target, chunk_rows=1))
        assert selected_log_probs(logits, target).dtype == torch.float32


TOK = byte_tokenizer()
POOL_IDS, POOL_TEXTS = letter_pool(TOK, n=64, length=6)
ScriptedDPG = scripted(DPG, POOL_IDS, POOL_TEXTS)
STEPS = 3


def run(precision, accelerator: str = "cpu", strategy="auto", steps: int = STEPS, ckpt_path=None, **kwargs):
    """``STEPS`` scripted DPG steps; returns (module, per-step train metrics, weight change)."""
    L.seed_everything(0, verbose=False)
    # contains an "a": Z ≈ 1 − (3/4)^6 under the letter pool, every step has a gradient
    kwargs.setdefault("minibatch_size", 8)
    module = ScriptedDPG(target=[Pointwise(Regex("a", name="has_a"))], model="tiny-gpt2", n_samples=16,
                         max_new_tokens=6, lr=1e-3, **kwargs)
    history = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            history.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})

    start = {}

    class Start(L.Callback):
        def on_train_start(self, trainer, pl_module):
            start.update({k: v.float() for k, v in full_parameters(trainer, pl_module)})

    class End(L.Callback):
        def on_train_end(self, trainer, pl_module):
            pl_module.end_params = {k: v.float() for k, v in full_parameters(trainer, pl_module)}

    plugin = {"precision": precision} if isinstance(precision, str) else {"plugins": [precision]}
    trainer = L.Trainer(max_steps=steps, accelerator=accelerator, devices=1, **plugin, logger=False,
                        strategy=strategy, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[Record(), Start(), End()])
    trainer.fit(module, PromptDataModule(prompt="", steps_per_epoch=100), ckpt_path=ckpt_path)
    module.start_params = start
    delta = torch.cat([(p.cpu() - start[k].cpu()).flatten() for k, p in module.end_params.items()])
    return module, history, delta


def full_parameters(trainer, module) -> list[tuple[str, torch.Tensor]]:
    """(name, copy) of the policy's full parameters, gathered when a strategy shards them (FSDP,
    DeepSpeed ZeRO-3), with the wrappers' name prefixes removed."""
    import contextlib

    params = list(module.model.named_parameters())
    gather = contextlib.nullcontext()
    if type(trainer.strategy).__name__ == "FSDPStrategy":
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        gather = FSDP.summon_full_params(trainer.strategy.model, writeback=False)  # the root unit, not an inner one
    elif any(hasattr(p, "ds_id") for _, p in params):
        import deepspeed

        gather = deepspeed.zero.GatheredParameters([p for _, p in params])
    with gather:
        return [(unwrapped_name(k), p.detach().clone()) for k, p in module.model.named_parameters()]


@pytest.fixture(scope="module")
def fp32_run():
    return run("32-true")


def test_bf16_mixed_dpg_is_finite_and_close_to_fp32(fp32_run):
    _, ref, ref_delta = fp32_run
    module, hist, delta = run("bf16-mixed")
    assert len(hist) == len(ref) == STEPS and module.skipped_steps == 0
    for t, (a, b) in enumerate(zip(hist, ref)):
        assert all(math.isfinite(v) for v in a.values()), a
        for name in ("train/z", "train/ess", "train/kl_target_policy", "train/kl_policy_base", "train/scorer/has_a"):
            assert math.isclose(a[name], b[name], rel_tol=0.05, abs_tol=2e-3), (t, name, a[name], b[name])
    # the same updates up to bf16 rounding (Adam's first steps are near sign(g)·lr)
    cos = torch.nn.functional.cosine_similarity(delta, ref_delta, dim=0)
    assert cos > 0.9 and ref_delta.abs().max() > 1e-3, float(cos)
    # log-probs stay float32 even when computed under autocast
    samples = module.sample([""], n=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert module.policy.token_log_probs(module.model, samples).dtype == torch.float32
    assert samples.log_q.dtype == torch.float32


def test_bf16_gradient_passes_keep_importance_weights_exact(fp32_run):
    """grad_dtype=bfloat16: only the policy's forward/backward is autocast, so at the first step
    (same weights, same samples) Ẑ, ESS and the sampled moments equal the fp32 run's exactly."""
    _, ref, ref_delta = fp32_run
    module, hist, delta = run("32-true", grad_dtype="bfloat16")
    assert len(hist) == STEPS and module.skipped_steps == 0
    for name in ("train/z", "train/z_batch", "train/ess", "train/n_satisfying"):
        assert hist[0][name] == ref[0][name], (name, hist[0][name], ref[0][name])
    for a, b in zip(hist, ref):
        assert all(math.isfinite(v) for v in a.values())
        assert math.isclose(a["train/kl_target_policy"], b["train/kl_target_policy"], rel_tol=0.05, abs_tol=2e-3)
    cos = torch.nn.functional.cosine_similarity(delta, ref_delta, dim=0)
    assert cos > 0.9, float(cos)
    assert not torch.equal(delta, ref_delta)  # the gradients did run in bf16
    assert all(p.dtype == torch.float32 for p in module.model.parameters())


def test_bf16_true_trains_bf16_weights_with_float32_log_probs(fp32_run):
    _, ref, _ = fp32_run
    module, hist, delta = run("bf16-true")
    assert next(module.model.parameters()).dtype == torch.bfloat16
    assert all(math.isfinite(v) for h in hist for v in h.values())
    assert module.skipped_steps == 0 and delta.abs().max() > 1e-3
    assert math.isclose(hist[0]["train/kl_target_policy"], ref[0]["train/kl_target_policy"], rel_tol=0.05)
    samples = module.sample([""], n=4)
    assert samples.log_q.dtype == torch.float32
    assert module.engine.base_log_prob(samples).dtype == torch.float32


def test_bf16_sampling_log_q_is_the_bf16_density():
    """sample_dtype=bfloat16: log_q is the log-prob of the bf16 forward that drew the samples — it
    matches a bf16 recomputation to bf16 noise and is further from the fp32 model's log-prob."""
    L.seed_everything(0, verbose=False)
    module = DPG(target=[Pointwise(Regex("a", name="has_a"))], model="tiny-llama", n_samples=16,
                 max_new_tokens=8, sample_dtype="bfloat16", grad_dtype="bfloat16")
    module.configure_model()
    samples = module.sample(["hello"])
    assert samples.log_q.dtype == torch.float32 and torch.isfinite(samples.log_q).all()
    with torch.no_grad():
        lp32 = module.policy.log_prob(module.model, samples)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lp16 = module.policy.log_prob(module.model, samples)
    d16, d32 = (samples.log_q - lp16).abs().mean(), (samples.log_q - lp32).abs().mean()
    assert d32 > 0  # autocast really applied while sampling
    assert d16 < d32, (float(d16), float(d32))


def test_bf16_sampling_and_gradients_dpg_run_is_consistent():
    L.seed_everything(0, verbose=False)
    module = DPG(target=[Pointwise(Regex("a", name="has_a"))], model="tiny-llama", n_samples=16,
                 minibatch_size=8, max_new_tokens=6, lr=1e-3, sample_dtype="bfloat16", grad_dtype="bfloat16")
    seen = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            seen.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})

    trainer = L.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[Record()])
    trainer.fit(module, PromptDataModule(prompt="", steps_per_epoch=10))
    assert len(seen) == 3 and all(math.isfinite(v) for m in seen for v in m.values())
    # π (fp32 forward) / q (bf16 sampler) stays ≈ 1: the two densities describe the same samples
    assert all(abs(m["train/importance_ratio_policy_proposal"] - 1) < 0.1 for m in seen), seen


def test_fp16_grad_scaler_overflow_skips_the_update_and_lowers_the_scale():
    """16-mixed (a GradScaler): a scaled gradient that overflows is the scaler's business — the
    update is skipped, the scale lowered and the step counted, and training goes on (before, the
    still-scaled gradients were checked and clipped: every overflow was a 'bad step' and the scale
    never came down). Run on CPU with an explicit fp16 plugin and a huge initial scale."""
    from lightning.pytorch.plugins import MixedPrecision

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40, backoff_factor=2.0**-20, growth_interval=1000)
    module, hist, delta = run(MixedPrecision("16-mixed", "cpu", scaler=scaler), steps=4, max_grad_norm=1.0)
    assert len(hist) == 4 and module.skipped_steps >= 1 and module.bad_steps == 0
    assert scaler.get_scale() <= 2.0**40 * 2.0**-20 * (1 + 1e-9)  # lowered once per overflowing step
    assert torch.isfinite(delta).all() and delta.abs().max() > 1e-4  # the later steps did update


def test_train_attention_switches_the_kernel_of_gradient_passes_only():
    """``train_attention``: the gradient passes' forward runs with the chosen kernel (eager by default
    for bf16 gradient passes on CPU), restored afterwards; eager and SDPA give the same log-probs
    and gradients in fp32."""
    L.seed_everything(0, verbose=False)
    kw = dict(target=[Pointwise(Regex("a", name="has_a"))], model="tiny-llama", n_samples=8, max_new_tokens=6)
    seen = {}
    for name, extra in (("fp32", {}), ("bf16", {"grad_dtype": "bfloat16"}), ("sdpa", {"grad_dtype": "bfloat16",
                                                                                      "train_attention": "sdpa"})):
        module = DPG(**kw, **extra)
        module.configure_model()
        before = module.model.config._attn_implementation
        with module.engine.grad_autocast():
            seen[name] = module.model.config._attn_implementation
        assert module.model.config._attn_implementation == before
    assert seen == {"fp32": before, "bf16": "eager", "sdpa": "sdpa"} and before == "sdpa"
    with pytest.raises(ValueError, match="train_attention"):
        DPG(**kw, train_attention="fast")

    module = DPG(**kw, train_attention="eager")
    module.configure_model()
    samples = module.sample(["hello"])
    grads, sdpa_calls = {}, []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention

    def counting_sdpa(*args, **kwargs):
        sdpa_calls.append(1)
        return real_sdpa(*args, **kwargs)

    for impl in ("sdpa", "eager"):
        module.engine.settings = dataclasses.replace(module.engine.settings, train_attention=impl)
        module.model.zero_grad()
        sdpa_calls.clear()
        torch.nn.functional.scaled_dot_product_attention = counting_sdpa
        try:
            with module.engine.grad_autocast():
                lp = module.policy.token_log_probs(module.model, samples).sum(-1)
        finally:
            torch.nn.functional.scaled_dot_product_attention = real_sdpa
        assert (len(sdpa_calls) > 0) is (impl == "sdpa")  # the forward really used the chosen kernel
        lp.sum().backward()
        grads[impl] = (lp.detach(), torch.cat([p.grad.flatten() for p in module.model.parameters()]))
    torch.testing.assert_close(grads["eager"][0], grads["sdpa"][0], rtol=0, atol=1e-5)
    torch.testing.assert_close(grads["eager"][1], grads["sdpa"][1], rtol=1e-4, atol=1e-6)


def test_bf16_gradient_checkpointing_reruns_the_forward_with_its_attention_kernel():
    """``grad_dtype: bfloat16`` on CPU runs the gradient passes with eager attention (``train_attention:
    auto``); gradient checkpointing reruns each layer's forward inside the backward, which must use the
    same kernel (else torch's checkpoint raises on the recomputed tensors). The first Adam update —
    lr · g/(|g| + eps) per coordinate — is then that of the run without checkpointing."""
    weights = {}
    for ckpt in (False, True):
        L.seed_everything(0, verbose=False)
        module = DPG(target=[Pointwise(Regex("a", name="has_a"))], model="tiny-llama", n_samples=8,
                     minibatch_size=4, max_new_tokens=6, lr=1e-3, off_policy=False, grad_dtype="bfloat16",
                     gradient_checkpointing=ckpt)
        trainer = L.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
        trainer.fit(module, PromptDataModule(prompt="", steps_per_epoch=1))
        assert module.engine.train_attention == "eager"
        weights[ckpt] = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    moved = [n for n, w in weights[False].items() if not torch.equal(w, weights[True][n])]
    assert len(moved) == 0, moved[:5]


def test_sample_cast_weights_draws_from_the_cast_model_and_restores_the_weights():
    """``sample_cast_weights``: the sampler runs the policy with bf16 weights (no autocast), so log_q
    is the bf16 model's density — a recomputation with the bf16 weights matches it more closely than
    one under autocast — and the policy gets its fp32 parameters back, the same objects, bitwise."""
    import copy

    from lit_align.models.engine import cast_weights

    L.seed_everything(0, verbose=False)
    module = DPG(target=[Pointwise(Regex("a", name="has_a"))], model="tiny-llama", n_samples=16,
                 max_new_tokens=8, sample_dtype="bfloat16", sample_cast_weights=True, off_policy=False)
    module.configure_model()
    before = {n: (p, p.detach().clone()) for n, p in module.model.named_parameters()}
    samples = module.sample(["hello"])
    for n, p in module.model.named_parameters():
        assert p is before[n][0] and p.dtype == torch.float32 and torch.equal(p, before[n][1]), n
    with torch.no_grad():
        cast = copy.deepcopy(module.model)  # parameters in bf16, buffers (rotary frequencies) as they were
        for p in cast.parameters():
            p.data = p.data.to(torch.bfloat16)
        lp_cast = module.policy.log_prob(cast, samples)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lp_auto = module.policy.log_prob(module.model, samples)
        with cast_weights(module.model, torch.bfloat16):
            assert next(module.model.parameters()).dtype == torch.bfloat16
            lp_inside = module.policy.log_prob(module.model, samples)
    torch.testing.assert_close(lp_inside, lp_cast, rtol=0, atol=0)
    d_cast, d_auto = (samples.log_q - lp_cast).abs().mean(), (samples.log_q - lp_auto).abs().mean()
    assert d_cast < d_auto, (float(d_cast), float(d_auto))


def test_sample_cast_weights_needs_a_half_precision_sample_dtype():
    with pytest.raises(ValueError, match="sample_cast_weights.*sample_dtype"):
        DPG(target=[Pointwise(Regex("a", name="has_a"))], model="tiny-llama", sample_cast_weights=True)


def test_cast_weights_applies_only_to_plain_fp32_models():
    """LoRA views, adapters and half-precision weights sample under autocast instead."""
    from lit_align.models.engine import castable
    from lit_align.models.loading import load
    from lit_align.models.lora import AdapterDisabled, AdapterSnapshot, apply_lora

    model, _ = load("tiny-llama")
    assert castable(model)
    assert not castable(load("tiny-llama")[0].to(torch.bfloat16))
    lora = apply_lora(load("tiny-llama")[0], {"r": 2})
    assert not castable(lora) and not castable(AdapterDisabled(lora)) and not castable(AdapterSnapshot(lora))
