"""The completion forward pass (lit_align/models/forward.py): shared prompts and trimming give
the same log-probs, hidden states, entropies and gradients as one pass per row on the whole
padded prompt + completion, and really skip the work they claim to skip."""

from __future__ import annotations

import pytest
import torch

from lit_align.models import Policy
from lit_align.models.policy import disable_dropout
from lit_align.models.forward import shared_prompts, trimmed

CAUSAL = ["tiny-gpt2", "tiny-llama"]


def sampled(name, make_model, n=3):
    model, tok = make_model(name, eos_bias=4.0)  # some completions end early, others run to the cap
    disable_dropout(model)  # train mode below: both passes must compute the same function
    policy = Policy(tok, max_new_tokens=8)
    torch.manual_seed(0)
    samples = policy.sample(model, ["hello there", "a", "xyz"], n)
    assert samples.prompt_mask.sum(-1).unique().numel() > 1  # left padding
    assert (samples.lengths < samples.completion_ids.shape[1]).any()
    return model, policy, samples


def outputs_and_grads(policy, model, samples, share):
    policy.share_prompts = share
    model.zero_grad()
    out = policy.token_outputs(model, samples, hidden=True, entropy=True)
    weights = torch.linspace(-1, 1, out.log_probs.numel()).view_as(out.log_probs)
    ((out.log_probs * weights).sum() + out.hidden.square().mean() + out.entropy.sum()).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return out, grads


@pytest.mark.parametrize("name", CAUSAL)
def test_shared_prompt_pass_equals_one_pass_per_row(name, make_model):
    model, policy, samples = sampled(name, make_model)
    model.train()
    shared, g_shared = outputs_and_grads(policy, model, samples, True)
    full, g_full = outputs_and_grads(policy, model, samples, False)
    for a, b in [(shared.log_probs, full.log_probs), (shared.hidden, full.hidden), (shared.entropy, full.entropy)]:
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert (shared.log_probs[samples.completion_mask == 0] == 0).all()
    assert g_shared.keys() == g_full.keys() and len(g_full) > 0
    for k in g_full:
        torch.testing.assert_close(g_shared[k], g_full[k], atol=1e-5, rtol=1e-4, msg=k)


@pytest.mark.parametrize("name", CAUSAL)
def test_shared_prompts_skip_the_repeated_prompt_positions(name, make_model):
    """Token positions the model runs: distinct prompts once, then each row's completion."""
    model, policy, samples = sampled(name, make_model)
    seen = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["input_ids"].numel()), with_kwargs=True)
    try:
        policy.share_prompts = True
        policy.token_log_probs(model, samples)
        shared_count, seen[:] = sum(seen), []
        policy.share_prompts = False
        policy.token_log_probs(model, samples)
        full_count = sum(seen)
    finally:
        hook.remove()
    used = trimmed(samples, trim_prompt=True)
    b, lp = used.prompt_ids.shape
    lc = used.completion_ids.shape[1]
    assert shared_count == 3 * lp + b * (lc - 1)
    assert full_count == b * (lp + lc)


def test_trimming_drops_only_columns_every_row_ignores(make_model):
    _, _, samples = sampled("tiny-llama", make_model)
    wide = samples.select(slice(0, len(samples)))
    pad = torch.full((len(wide), 2), 0)
    wide.prompt_ids = torch.cat([pad, wide.prompt_ids], 1)
    wide.prompt_mask = torch.cat([pad, wide.prompt_mask], 1)
    wide.completion_ids = torch.cat([wide.completion_ids, pad], 1)
    wide.completion_mask = torch.cat([wide.completion_mask, pad], 1)
    t = trimmed(wide, trim_prompt=True)
    assert t.prompt_mask[:, 0].any() and t.completion_mask[:, -1].any()
    assert t.prompt_mask.sum() == wide.prompt_mask.sum() and t.completion_mask.sum() == wide.completion_mask.sum()


def test_rows_with_distinct_prompts_are_not_grouped(make_model):
    _, _, samples = sampled("tiny-gpt2", make_model, n=1)
    assert shared_prompts(samples) is None
    _, _, samples = sampled("tiny-gpt2", make_model, n=2)
    first, inverse = shared_prompts(samples)
    assert first.tolist() == [0, 2, 4] and inverse.tolist() == [0, 0, 1, 1, 2, 2]


def test_gradient_checkpointing_falls_back_to_one_pass_per_row(make_model):
    model, policy, samples = sampled("tiny-llama", make_model)
    expected = policy.token_log_probs(model, samples).detach()
    model.gradient_checkpointing_enable()
    model.train()
    got = policy.token_log_probs(model, samples)
    got.sum().backward()
    torch.testing.assert_close(got.detach(), expected, atol=1e-5, rtol=1e-4)
