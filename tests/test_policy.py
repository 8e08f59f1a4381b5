"""Policy: exact ancestral sampling, sequence log-probs and their masking, sampling warps.

Everything is checked against an independent computation: a plain, unpadded, uncached
forward pass of the model over ``prompt + completion`` whose per-token conditionals are
summed by hand over the completion tokens up to and including the first EOS.
"""

from __future__ import annotations

import math

import pytest
import torch

from conftest import MODEL_NAMES, TINY_NAMES
from lit_align.models import Policy, Samples

ATOL = 1e-4
EOS_BIAS = 4.0  # p(EOS) ≈ 0.18 per token for the near-uniform tiny models


# ----------------------------------------------------------------- helpers
def is_seq2seq(model) -> bool:
    return bool(getattr(model.config, "is_encoder_decoder", False))


def contexts_for(name: str) -> list[str]:
    """Contexts of different token lengths (so prompts are left-padded), one empty for causal LMs."""
    if name == "toy":
        return ["", "a", "abc"]
    return ["hello there", "a", "", "xyz"] if name != "tiny-t5" else ["hello there", "a", "xyz q"]


def unpadded_prompt(samples: Samples, i: int) -> list[int]:
    return samples.prompt_ids[i][samples.prompt_mask[i].bool()].tolist()


def scored_completion(samples: Samples, i: int, eos_id: int | None) -> list[int]:
    """The completion tokens that count: up to and including the first EOS (computed here, not by Policy)."""
    row = samples.completion_ids[i].tolist()
    if eos_id is not None and eos_id in row:
        return row[: row.index(eos_id) + 1]
    return row


@torch.no_grad()
def step_logits(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """Logits (len(completion), V) predicting each completion token, from one plain forward pass."""
    if is_seq2seq(model):
        start = model.config.decoder_start_token_id
        dec = torch.tensor([[start] + completion[:-1]])
        return model(input_ids=torch.tensor([prompt]), decoder_input_ids=dec).logits[0].float()
    full = torch.tensor([prompt + completion])
    logits = model(input_ids=full).logits[0].float()
    return logits[len(prompt) - 1 : len(prompt) + len(completion) - 1]


def manual_log_prob(model, prompt, completion, warp=None) -> float:
    logits = step_logits(model, prompt, completion)
    logp = warp(logits) if warp is not None else torch.log_softmax(logits, -1)
    return float(sum(logp[t, tok] for t, tok in enumerate(completion)))


def make_samples(policy: Policy, model, contexts: list[str], completions: list[list[int]], prompt_extra_pad: int = 0,
                 pad_fill: int | None = None) -> Samples:
    """Hand-built Samples: left-padded prompts (optionally with extra padding whose ids are ``pad_fill``)."""
    ids, mask = policy.encode_contexts(contexts, is_seq2seq(model))
    if prompt_extra_pad:
        ids = torch.cat([torch.full((len(contexts), prompt_extra_pad), policy.pad_id), ids], 1)
        mask = torch.cat([torch.zeros((len(contexts), prompt_extra_pad), dtype=torch.long), mask], 1)
    if pad_fill is not None:
        ids = ids.masked_fill(mask == 0, pad_fill)
    width = max(len(c) for c in completions)
    comp = torch.full((len(completions), width), policy.pad_id, dtype=torch.long)
    for i, c in enumerate(completions):
        comp[i, : len(c)] = torch.tensor(c)
    cmask = policy.completion_mask(comp)
    return Samples(ids, mask, comp, cmask, torch.zeros(len(contexts)), [""] * len(contexts), list(contexts),
                   torch.arange(len(contexts)))


# ----------------------------------------------------------------- sampling vs scoring
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_sampled_log_q_equals_log_prob_forward(name, make_model):
    model, tok = make_model(name, eos_bias=EOS_BIAS if name != "toy" else 0.0)
    policy = Policy(tok, max_new_tokens=8 if name != "toy" else 4)
    contexts = contexts_for(name)
    n = 3
    torch.manual_seed(0)
    samples = policy.sample(model, contexts, n)
    assert len(samples) == n * len(contexts)
    # prompts really are left-padded to a common width
    assert samples.prompt_mask.sum(-1).unique().numel() > 1
    assert (samples.prompt_mask[:, -1] == 1).all()
    log_prob = policy.log_prob(model, samples)
    assert torch.isfinite(samples.log_q).all() and (samples.log_q < 0).all()
    torch.testing.assert_close(samples.log_q, log_prob.detach().float(), atol=ATOL, rtol=0)
    # minibatched scoring gives the same numbers
    torch.testing.assert_close(policy.log_prob(model, samples, batch_size=4).detach(), log_prob.detach(), atol=ATOL, rtol=0)
    # and both equal the per-token conditionals summed by hand over the completion (to the first EOS)
    manual = torch.tensor([manual_log_prob(model, unpadded_prompt(samples, i), scored_completion(samples, i, tok.eos_token_id))
                           for i in range(len(samples))])
    torch.testing.assert_close(samples.log_q, manual, atol=ATOL, rtol=0)
    if name != "toy":  # the EOS bias makes some completions end early and others run to the cap
        lengths = samples.lengths
        assert (lengths < samples.completion_ids.shape[1]).any()


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_static_cache_samples_what_the_dynamic_cache_samples(name, make_model):
    """Decoding into a preallocated StaticCache (the default) draws the same tokens with the same log_q
    as a growing DynamicCache: its unwritten slots are hidden from every query."""
    from transformers import StaticCache

    from lit_align.models import decoding

    model, tok = make_model(name, eos_bias=EOS_BIAS)
    assert decoding._static_cache(model, 8) is not None and isinstance(decoding._static_cache(model, 8), StaticCache)
    runs = []
    for static in (True, False):
        policy = Policy(tok, max_new_tokens=8)
        policy.static_cache = static
        torch.manual_seed(0)
        runs.append(policy.sample(model, contexts_for(name), 3))
    (a, b) = runs
    assert torch.equal(a.completion_ids, b.completion_ids)
    torch.testing.assert_close(a.log_q, b.log_q, atol=1e-5, rtol=0)
    # by default (None) the static cache is used only in half precision, where it measured faster
    auto, ids = Policy(tok), torch.zeros(1, 1, dtype=torch.long)
    assert auto.static_cache is None and not auto._use_static_cache(model, ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert auto._use_static_cache(model, ids)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_samples_grouped_by_context_and_texts_clean(name, make_model):
    model, tok = make_model(name, eos_bias=EOS_BIAS if name != "toy" else 0.0)
    policy = Policy(tok, max_new_tokens=8 if name != "toy" else 4)
    contexts = contexts_for(name)
    n = 3
    torch.manual_seed(1)
    samples = policy.sample(model, contexts, n)
    expected_index = torch.arange(len(contexts)).repeat_interleave(n)
    assert samples.context_index.tolist() == expected_index.tolist()
    assert samples.contexts == [contexts[i] for i in expected_index.tolist()]
    for i in range(len(samples)):
        ctx = contexts[int(samples.context_index[i])]
        assert unpadded_prompt(samples, i) == policy.encode_context(ctx, is_seq2seq(model))
    eos, pad = tok.eos_token_id, tok.pad_token_id
    saw_eos = False
    for i in range(len(samples)):
        row = samples.completion_ids[i].tolist()
        mask = samples.completion_mask[i].tolist()
        if eos is not None and eos in row:
            saw_eos = True
            k = row.index(eos)
            assert mask == [1] * (k + 1) + [0] * (len(row) - k - 1), "mask: through the first EOS, then 0"
            assert all(t == pad for t in row[k + 1 :]), "tokens after the first EOS are padding"
            kept = row[:k]
        else:
            assert mask == [1] * len(row)
            kept = row
        assert samples.texts[i] == tok.decode(kept, skip_special_tokens=True)
        assert "<|endoftext|>" not in samples.texts[i] and "<pad>" not in samples.texts[i]
    if name == "toy":
        assert all(len(t) == 4 and set(t) <= set("abcd") for t in samples.texts)
    else:
        assert saw_eos


def test_sample_restores_training_mode(make_model):
    model, tok = make_model("tiny-gpt2")
    model.train()
    Policy(tok, max_new_tokens=2).sample(model, ["a"], 2)
    assert model.training
    model.eval()
    Policy(tok, max_new_tokens=2).sample(model, ["a"], 2)
    assert not model.training


# ----------------------------------------------------------------- masking
@pytest.mark.parametrize("name", TINY_NAMES)
def test_tokens_after_eos_and_prompt_padding_do_not_count(name, make_model):
    model, tok = make_model(name)
    policy = Policy(tok, max_new_tokens=8)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    contexts = ["hello there", "a"]
    words = [tok(" you", add_special_tokens=False)["input_ids"], tok("bc", add_special_tokens=False)["input_ids"]]
    clean = [words[0] + [eos], words[1] + [eos] + [pad] * 4]
    junk = [words[0] + [eos], words[1] + [eos] + tok("zz", add_special_tokens=False)["input_ids"] + [eos, 65]]
    s_clean = make_samples(policy, model, contexts, clean)
    s_junk = make_samples(policy, model, contexts, junk)
    # the mask ends at (and includes) the first EOS, whatever follows it
    assert s_junk.completion_mask.sum(-1).tolist() == [len(words[0]) + 1, len(words[1]) + 1]
    assert torch.equal(s_clean.completion_mask[:, : s_junk.completion_mask.shape[1]], s_junk.completion_mask[:, : s_clean.completion_mask.shape[1]])
    lp_clean = policy.log_prob(model, s_clean).detach()
    lp_junk = policy.log_prob(model, s_junk).detach()
    torch.testing.assert_close(lp_junk, lp_clean, atol=ATOL, rtol=0)
    # prompt tokens do not count and the EOS does: the manual sum over completion + EOS
    manual = torch.tensor([manual_log_prob(model, policy.encode_context(c, is_seq2seq(model)), w + [eos])
                           for c, w in zip(contexts, words)])
    torch.testing.assert_close(lp_clean, manual, atol=ATOL, rtol=0)
    without_eos = torch.tensor([manual_log_prob(model, policy.encode_context(c, is_seq2seq(model)), w)
                                for c, w in zip(contexts, words)])
    assert ((lp_clean - without_eos).abs() > 1e-3).all(), "the EOS token's log-prob must be part of the sum"
    # extra left padding, and arbitrary ids under the prompt mask, change nothing
    s_padded = make_samples(policy, model, contexts, clean, prompt_extra_pad=3, pad_fill=70)
    assert s_padded.prompt_ids.shape[1] == s_clean.prompt_ids.shape[1] + 3
    torch.testing.assert_close(policy.log_prob(model, s_padded).detach(), lp_clean, atol=ATOL, rtol=0)
    # ... while the prompt itself does condition the completion (the checks above can see a difference)
    s_other = make_samples(policy, model, ["goodbye", "q"], clean)
    assert ((policy.log_prob(model, s_other).detach() - lp_clean).abs() > 1e-3).any()


def test_token_log_probs_zero_off_completion(make_model):
    model, tok = make_model("tiny-gpt2")
    policy = Policy(tok, max_new_tokens=8)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    s = make_samples(policy, model, ["ab"], [[66, eos, 67, 68]])
    per_token = policy.token_log_probs(model, s).detach()
    assert (per_token[0, :2] < 0).all()
    assert (per_token[0, 2:] == 0).all()
    torch.testing.assert_close(per_token.sum(-1), policy.log_prob(model, s).detach())
    assert pad != eos


def test_toy_prompt_padding_does_not_count(make_model):
    model, tok = make_model("toy")
    policy = Policy(tok, max_new_tokens=4)
    comps = [[0, 1, 2, 3], [3, 3, 1, 0]]
    s = make_samples(policy, model, ["", "ab"], comps)
    assert s.completion_mask.sum().item() == 8  # no EOS in the toy space: every token counts
    s_pad = make_samples(policy, model, ["", "ab"], comps, prompt_extra_pad=2)
    lp = policy.log_prob(model, s).detach()
    torch.testing.assert_close(policy.log_prob(model, s_pad).detach(), lp, atol=ATOL, rtol=0)
    manual = torch.tensor([manual_log_prob(model, policy.encode_context(c), x) for c, x in zip(["", "ab"], comps)])
    torch.testing.assert_close(lp, manual, atol=ATOL, rtol=0)


# ----------------------------------------------------------------- warps
@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-t5", "toy"])
def test_top_k_1_is_greedy_with_log_q_zero(name, make_model):
    model, tok = make_model(name)
    policy = Policy(tok, max_new_tokens=6 if name != "toy" else 4, top_k=1)
    assert not policy.exact
    contexts = contexts_for(name)[:2]
    torch.manual_seed(0)
    a = policy.sample(model, contexts, 2)
    torch.manual_seed(123)
    b = policy.sample(model, contexts, 2)
    assert torch.equal(a.completion_ids, b.completion_ids), "top_k=1 sampling must not depend on the seed"
    assert torch.equal(a.log_q, torch.zeros_like(a.log_q))
    for i in range(len(a)):
        comp = scored_completion(a, i, tok.eos_token_id)
        logits = step_logits(model, unpadded_prompt(a, i), comp)
        assert logits.argmax(-1).tolist() == comp, "each token is the argmax of the model's conditional"


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama", "tiny-t5", "toy"])
def test_temperature_log_q_is_tempered_softmax(name, make_model):
    model, tok = make_model(name, eos_bias=EOS_BIAS if name != "toy" else 0.0)
    T = 0.5
    policy = Policy(tok, max_new_tokens=6 if name != "toy" else 4, temperature=T)
    assert not policy.exact
    torch.manual_seed(0)
    s = policy.sample(model, contexts_for(name), 2)
    manual = torch.tensor([manual_log_prob(model, unpadded_prompt(s, i), scored_completion(s, i, tok.eos_token_id),
                                           warp=lambda lg: torch.log_softmax(lg / T, -1)) for i in range(len(s))])
    torch.testing.assert_close(s.log_q, manual, atol=ATOL, rtol=0)
    # log_prob stays the unwarped model log-prob, which differs from the tempered one
    unwarped = policy.log_prob(model, s).detach()
    assert ((unwarped - s.log_q).abs() > 1e-3).all()


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-t5"])
def test_top_k_with_temperature(name, make_model):
    model, tok = make_model(name)
    k, T = 5, 0.8
    policy = Policy(tok, max_new_tokens=6, top_k=k, temperature=T)
    torch.manual_seed(0)
    s = policy.sample(model, ["hello", "a b"], 3)
    for i in range(len(s)):
        comp = scored_completion(s, i, tok.eos_token_id)
        logits = step_logits(model, unpadded_prompt(s, i), comp) / T
        top = torch.topk(logits, k, dim=-1)
        total = 0.0
        for t, tok_id in enumerate(comp):
            assert tok_id in top.indices[t].tolist(), "sampled token outside the top k"
            total += float(logits[t, tok_id] - torch.logsumexp(top.values[t], 0))
        assert math.isclose(float(s.log_q[i]), total, abs_tol=ATOL)


@pytest.mark.parametrize("name", ["tiny-gpt2", "toy"])
def test_top_p_log_q_is_renormalised_nucleus(name, make_model):
    model, tok = make_model(name)
    p = 0.5
    policy = Policy(tok, max_new_tokens=6 if name != "toy" else 4, top_p=p)
    torch.manual_seed(0)
    s = policy.sample(model, contexts_for(name)[:2], 3)
    for i in range(len(s)):
        comp = scored_completion(s, i, tok.eos_token_id)
        probs = torch.softmax(step_logits(model, unpadded_prompt(s, i), comp).double(), -1)
        total = 0.0
        for t, tok_id in enumerate(comp):
            pr = probs[t]
            # nucleus: tokens whose strictly-more-probable mass is still below p
            higher = pr[pr > pr[tok_id]].sum()
            assert higher < p, "sampled token outside the nucleus"
            sorted_p = torch.sort(pr, descending=True).values
            cum = sorted_p.cumsum(0)
            size = int((cum < p).sum()) + 1
            total += math.log(pr[tok_id]) - math.log(sorted_p[:size].sum())
        assert math.isclose(float(s.log_q[i]), total, abs_tol=ATOL)
    if name != "toy":  # near-uniform tiny model: a 0.5 nucleus really cuts the vocabulary
        assert (s.log_q > policy.log_prob(model, s).detach()).all()


# ----------------------------------------------------------------- settings
def test_exact_flag(make_model):
    _, tok = make_model("toy")
    assert Policy(tok).exact
    assert Policy(tok, temperature=1.0, top_k=0, top_p=1.0).exact
    assert not Policy(tok, temperature=0.9).exact
    assert not Policy(tok, top_k=10).exact
    assert not Policy(tok, top_p=0.95).exact


@pytest.mark.parametrize("kwargs", [
    {"max_new_tokens": 0}, {"temperature": 0.0}, {"temperature": -1.0}, {"top_p": 0.0},
    {"top_p": 1.5}, {"top_k": -1},
])
def test_invalid_settings_raise(kwargs, make_model):
    _, tok = make_model("toy")
    with pytest.raises(ValueError):
        Policy(tok, **kwargs)


@pytest.mark.parametrize("name", ["tiny-gpt2", "toy"])
def test_chat_template_without_template_is_a_clear_error(name, make_model):
    _, tok = make_model(name)
    with pytest.raises(ValueError, match="chat template"):
        Policy(tok, chat_template=True)


def test_chat_template_wraps_context(make_model):
    _, tok = make_model("tiny-gpt2")
    tok.chat_template = ("{% for m in messages %}[{{ m['role'] }}:{{ m['content'] }}]{% endfor %}"
                         "{% if add_generation_prompt %}>{% endif %}")
    policy = Policy(tok, chat_template=True)
    ids = policy.encode_context("hi")
    assert ids == tok("[user:hi]>", add_special_tokens=False)["input_ids"]


def test_empty_context_starts_from_bos_and_long_prompts_are_truncated(make_model):
    _, tok = make_model("tiny-gpt2")
    policy = Policy(tok, max_prompt_length=3)
    assert policy.encode_context("") == [tok.bos_token_id]
    with pytest.warns(UserWarning, match="truncated"):
        ids = policy.encode_context("abcdef")
    assert ids == tok("def", add_special_tokens=False)["input_ids"]


def test_samples_select_and_minibatches(make_model):
    model, tok = make_model("toy")
    policy = Policy(tok, max_new_tokens=4)
    torch.manual_seed(0)
    s = policy.sample(model, ["", "ab"], 3)
    sub = s.select(torch.tensor([4, 1]))
    assert sub.texts == [s.texts[4], s.texts[1]] and sub.contexts == [s.contexts[4], s.contexts[1]]
    assert torch.equal(sub.completion_ids, s.completion_ids[[4, 1]])
    assert torch.equal(sub.log_q, s.log_q[[4, 1]])
    parts = list(s.minibatches(4))
    assert [len(p) for p in parts] == [4, 2]
    assert sum((p.texts for p in parts), []) == s.texts
