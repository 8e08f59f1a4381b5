"""The forward pass that scores completions: logits (and last hidden states) at the positions
that predict each completion token.

Two savings over one pass on ``prompt + completion`` per row, both exact up to float rounding:

- **trimming**: prompt columns that are padding in every row of the batch, and completion
  columns after the last scored token of every row, are not computed (outputs there are 0);
- **shared prompts**: rows that share a prompt (the ``n`` samples of one context, or every sample
  of an unconditional run) run it once: one pass over the distinct prompts fills a KV cache, its
  rows are repeated for the samples, and a second pass runs the completions on top of it. The
  gradient flows through the repeated keys and values into the prompt pass, as it would
  through ``n`` copies of it. With ``n`` samples of a prompt of ``P`` tokens this skips
  ``(n − 1)·P`` token positions in the forward and in the backward.
"""

from __future__ import annotations

import inspect
from dataclasses import replace

import torch
from torch import Tensor, nn

from lit_align.models.samples import Samples


def unwrapped(model: nn.Module) -> nn.Module:
    """The transformers model under a peft model or a LoRA view."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def cache_kwarg(model: nn.Module) -> str:
    """Name of the KV-cache argument: ``cache`` in transformers ≥ 5.2x, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(unwrapped(model).forward).parameters else "past_key_values"


def cache_out(out) -> object:
    """The KV cache a forward pass returned (under either argument name)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def trimmed(samples: Samples, trim_prompt: bool) -> Samples:
    """``samples`` without the all-padding prompt columns (left) and the completion columns after
    every row's last scored token (right); positions, computed from the mask, are unchanged."""
    comp = samples.completion_mask.any(0).nonzero()
    lc = int(comp[-1]) + 1 if len(comp) else 1
    start = 0
    if trim_prompt:
        real = samples.prompt_mask.any(0).nonzero()
        start = int(real[0]) if len(real) else samples.prompt_mask.shape[1] - 1
    if lc == samples.completion_ids.shape[1] and start == 0:
        return samples
    return replace(samples, prompt_ids=samples.prompt_ids[:, start:], prompt_mask=samples.prompt_mask[:, start:],
                   completion_ids=samples.completion_ids[:, :lc], completion_mask=samples.completion_mask[:, :lc])


def shared_prompts(samples: Samples) -> tuple[Tensor, Tensor] | None:
    """``(first, inverse)``: the first row of each run of identical consecutive prompts and, for
    every row, the index of its run; None when no two consecutive rows share a prompt."""
    key = torch.cat([samples.prompt_ids, samples.prompt_mask], dim=1)
    _, inverse, counts = torch.unique_consecutive(key, dim=0, return_inverse=True, return_counts=True)
    if len(counts) == key.shape[0]:
        return None
    return counts.cumsum(0) - counts, inverse


def _can_share(model: nn.Module) -> bool:
    inner = unwrapped(model)
    # under gradient checkpointing transformers turns the cache off in training
    flag = "is_activation_checkpointing" if hasattr(type(inner), "is_activation_checkpointing") \
        else "is_gradient_checkpointing"  # the name before transformers 5.2x
    return getattr(model, "supports_cache", True) and not (getattr(inner, flag, False) and inner.training)


def _last_hidden(out) -> Tensor:
    states = getattr(out, "decoder_hidden_states", None) or getattr(out, "hidden_states", None)
    if states is None:
        raise ValueError("the model returns no hidden states (output_hidden_states=True)")
    return states[-1]


def completion_forward(model: nn.Module, samples: Samples, hidden: bool = False,
                       share_prompts: bool = True) -> tuple[Tensor, Tensor | None, Samples]:
    """``(logits, states, used)``: the logits (B, L, V) predicting each completion token of
    ``used`` — ``samples`` trimmed, L ≤ its completion width — and, with ``hidden``, the last
    hidden states (B, L, H) at those positions."""
    kw = {"output_hidden_states": True} if hidden else {}
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        samples = trimmed(samples, trim_prompt=True)
        target = samples.completion_ids
        start = torch.full_like(target[:, :1], model.config.decoder_start_token_id)
        out = model(input_ids=samples.prompt_ids, attention_mask=samples.prompt_mask,
                    decoder_input_ids=torch.cat([start, target[:, :-1]], dim=1), use_cache=False, **kw)
        return out.logits, _last_hidden(out) if hidden else None, samples
    cached = getattr(model, "supports_cache", True)
    samples = trimmed(samples, trim_prompt=cached)  # a model without position ids sees every column
    shared = shared_prompts(samples) if share_prompts and _can_share(model) else None
    if shared is not None:
        result = _shared_forward(model, samples, *shared, kw)
        if result is not None:
            return (*result, samples)
    target = samples.completion_ids
    lc = target.shape[1]
    ids = torch.cat([samples.prompt_ids, target], dim=1)
    mask = torch.cat([samples.prompt_mask, torch.ones_like(target)], dim=1)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache_kw = {"position_ids": pos, "use_cache": False} if cached else {}
    # the positions that predict the completion, as an index: transformers then computes
    # exactly (B, Lc, V) contiguous logits, no slice copy of them and no zero-padded gradient
    keep = torch.arange(ids.shape[1] - lc - 1, ids.shape[1] - 1, device=ids.device)
    out = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep, **cache_kw, **kw)
    logits = out.logits
    if logits.shape[1] != lc:  # a model that ignores logits_to_keep returns every position
        logits = logits[:, -(lc + 1) : -1]
    return logits, _last_hidden(out)[:, -(lc + 1) : -1] if hidden else None, samples


def _shared_forward(model: nn.Module, samples: Samples, first: Tensor, inverse: Tensor,
                    kw: dict) -> tuple[Tensor, Tensor | None] | None:
    """The prompt pass on the distinct prompts, then the completions on their repeated cache
    (None: the model returned a cache that cannot be indexed by row)."""
    p_mask = samples.prompt_mask[first]
    cache_kw = cache_kwarg(model)
    out = model(input_ids=samples.prompt_ids[first], attention_mask=p_mask,
                position_ids=(p_mask.cumsum(-1) - 1).clamp(min=0), use_cache=True, logits_to_keep=1, **kw)
    past = cache_out(out)
    if past is None or not hasattr(past, "batch_select_indices"):
        return None
    past.batch_select_indices(inverse)  # indexing: the backward sums each prompt's rows
    logits = out.logits[:, -1:][inverse]
    states = _last_hidden(out)[:, -1:][inverse] if kw else None
    target = samples.completion_ids
    lc = target.shape[1]
    if lc > 1:
        mask = torch.cat([samples.prompt_mask, torch.ones_like(target[:, :-1])], dim=1)
        pos = samples.prompt_mask.sum(-1, keepdim=True) + torch.arange(lc - 1, device=target.device)
        out2 = model(input_ids=target[:, :-1], attention_mask=mask, position_ids=pos, use_cache=True,
                     **{cache_kw: past}, **kw)
        logits = torch.cat([logits, out2.logits], dim=1)
        if kw:
            states = torch.cat([states, _last_hidden(out2)], dim=1)
    return logits, states
