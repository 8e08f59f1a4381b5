"""The decoding loops of :class:`~lit_align.models.Policy`: ancestral sampling with a KV cache
(causal LMs, prompt prefilled once per context), without one (the toy LM) and for
encoder-decoders, with optional temperature / top-k / top-p warps. Each loop also returns the
log-probability of what it drew under the distribution it drew from (``log_q``).

In half precision, causal LMs that support it decode into a preallocated ``StaticCache`` (prompt +
``max_new_tokens`` slots) rather than a ``DynamicCache`` that grows every layer's keys and values by
concatenation at each token: sampling SmolLM2 under bf16 autocast is 1.12x faster that way, fp32
sampling 5% slower (benchmarks/results/perf/static_cache.md). The attention mask then covers every
slot; slots not yet written are hidden by causality (a query at position t attends to slots <= t),
so the sampled distribution is the same."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from transformers import StaticCache

from lit_align.models.forward import unwrapped, cache_kwarg, cache_out


def _static_cache(model: nn.Module, max_len: int) -> StaticCache | None:
    """A ``StaticCache`` of ``max_len`` slots for models whose attention supports one, else None."""
    inner = unwrapped(model)
    if not getattr(inner, "_can_compile_fullgraph", False) or getattr(inner.config, "is_encoder_decoder", False):
        return None
    return StaticCache(config=inner.config, max_cache_len=max_len)


def _repeat_rows(past: object, n: int) -> bool:
    """Repeat every row of a KV cache ``n`` times in place (False: this cache cannot be expanded)."""
    if isinstance(past, StaticCache):  # its layers have no batch_repeat_interleave of their own
        for layer in past.layers:
            layer.keys, layer.values = layer.keys.repeat_interleave(n, 0), layer.values.repeat_interleave(n, 0)
            layer.batch_size = layer.keys.shape[0]
        return True
    if hasattr(past, "batch_repeat_interleave"):
        past.batch_repeat_interleave(n)
        return True
    return False


class Decoding:
    """Mixed into :class:`~lit_align.models.Policy` (reads its warps, ``pad_id``, ``eos_id``,
    ``max_new_tokens`` and ``_draw``)."""

    #: Under sharded strategies (FSDP, DeepSpeed ZeRO-3) every rank must make the same number of
    #: forward calls: the training module sets this to a cross-rank AND of "all rows finished".
    sync_finished: Callable[[bool], bool] | None = None
    #: Decode causal LMs into a preallocated ``StaticCache`` (True), a growing ``DynamicCache``
    #: (False), or (None) a static one only in half precision (bf16/fp16 weights or autocast), where
    #: it measured faster; in fp32 it measured 5% slower (benchmarks/results/perf/static_cache.md).
    static_cache: bool | None = None

    def _use_static_cache(self, model: nn.Module, ids: Tensor) -> bool:
        if self.static_cache is not None:
            return self.static_cache
        device = ids.device.type
        if torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) != torch.float32:
            return True
        # HF models and the LoRA views (which own no parameters) say their dtype
        return getattr(model, "dtype", torch.float32) in (torch.bfloat16, torch.float16)

    def _done(self, finished: Tensor) -> bool:
        done = bool(finished.all())
        return self.sync_finished(done) if self.sync_finished is not None else done

    def _warp(self, logits: Tensor) -> Tensor:
        """Log-probs of the sampling distribution (float32)."""
        logits = logits.float()
        if self.temperature != 1.0:
            logits = logits / self.temperature
        if self.top_k > 0:
            kth = torch.topk(logits, min(self.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        logp = torch.log_softmax(logits, dim=-1)
        if self.top_p < 1.0:
            sorted_lp, order = torch.sort(logp, dim=-1, descending=True)
            cum = sorted_lp.exp().cumsum(-1)
            drop_sorted = (cum - sorted_lp.exp()) >= self.top_p  # keep the smallest set reaching top_p
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            logp = torch.log_softmax(logp.masked_fill(drop, float("-inf")), dim=-1)
        return logp

    def _step(self, logits: Tensor, finished: Tensor, log_q: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logp = self._warp(logits)
        tok = self._draw(logp.exp())
        tok = torch.where(finished, torch.full_like(tok, self.pad_id), tok)
        log_q = log_q + torch.where(finished, torch.zeros_like(log_q), logp.gather(-1, tok[:, None]).squeeze(-1))
        if self.eos_id is not None:
            finished = finished | (tok == self.eos_id)
        return tok, finished, log_q

    def _sample_causal(self, model: nn.Module, ids: Tensor, mask: Tensor, n: int = 1) -> tuple[Tensor, Tensor]:
        """Sample ``n`` completions per row of the (unique) prompts ``ids``."""
        if not getattr(model, "supports_cache", True):
            return self._sample_causal_no_cache(model, ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0))
        cache_kw = cache_kwarg(model)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        past = _static_cache(model, ids.shape[1] + self.max_new_tokens) if self._use_static_cache(model, ids) else None
        if past is not None:  # the mask spans every slot of the static cache from the start
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], self.max_new_tokens)], dim=1)
        # prefill once per context, then repeat its KV cache for the n samples
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                    **{cache_kw: past})
        past, logits = cache_out(out), out.logits[:, -1]
        if n > 1:
            if _repeat_rows(past, n):
                logits = logits.repeat_interleave(n, 0)
            else:  # a cache we cannot expand: prefill every row
                ids, mask, pos = (t.repeat_interleave(n, 0) for t in (ids, mask, pos))
                out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                            logits_to_keep=1, **{cache_kw: None})
                past, logits = cache_out(out), out.logits[:, -1]
            mask, pos = mask.repeat_interleave(n, 0), pos.repeat_interleave(n, 0)
        static = isinstance(past, StaticCache)
        b = mask.shape[0]
        finished = torch.zeros(b, dtype=torch.bool, device=ids.device)
        log_q = torch.zeros(b, dtype=torch.float32, device=ids.device)
        full_mask, step_pos = mask, pos[:, -1:]
        out_tokens: list[Tensor] = []
        for t in range(self.max_new_tokens):
            tok, finished, log_q = self._step(logits, finished, log_q)
            out_tokens.append(tok)
            if self._done(finished) or t == self.max_new_tokens - 1:
                break
            if not static:
                full_mask = torch.cat([full_mask, torch.ones_like(tok[:, None])], dim=1)
            step_pos = step_pos + 1
            out = model(input_ids=tok[:, None], attention_mask=full_mask, position_ids=step_pos,
                        use_cache=True, logits_to_keep=1, **{cache_kw: past})
            past, logits = cache_out(out), out.logits[:, -1]
        return torch.stack(out_tokens, dim=1), log_q

    def _sample_causal_no_cache(self, model: nn.Module, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Recompute the whole sequence at each step (models without a KV cache, e.g. the toy LM)."""
        b = ids.shape[0]
        finished = torch.zeros(b, dtype=torch.bool, device=ids.device)
        log_q = torch.zeros(b, dtype=torch.float32, device=ids.device)
        out_tokens: list[Tensor] = []
        seq, full_mask = ids, mask
        for _ in range(self.max_new_tokens):
            out = model(input_ids=seq, attention_mask=full_mask)
            tok, finished, log_q = self._step(out.logits[:, -1], finished, log_q)
            out_tokens.append(tok)
            if self._done(finished):
                break
            seq = torch.cat([seq, tok[:, None]], dim=1)
            full_mask = torch.cat([full_mask, torch.ones_like(tok[:, None])], dim=1)
        return torch.stack(out_tokens, dim=1), log_q

    def _sample_seq2seq(self, model: nn.Module, ids: Tensor, mask: Tensor, n: int = 1) -> tuple[Tensor, Tensor]:
        """Encode each (unique) source once, then decode ``n`` samples per source."""
        encoder_outputs = model.get_encoder()(input_ids=ids, attention_mask=mask)
        if n > 1:
            encoder_outputs.last_hidden_state = encoder_outputs.last_hidden_state.repeat_interleave(n, 0)
            mask = mask.repeat_interleave(n, 0)
        b = mask.shape[0]
        start = model.config.decoder_start_token_id
        dec = torch.full((b, 1), start, dtype=torch.long, device=ids.device)
        finished = torch.zeros(b, dtype=torch.bool, device=ids.device)
        log_q = torch.zeros(b, dtype=torch.float32, device=ids.device)
        out_tokens, past = [], None
        cache_kw = cache_kwarg(model)
        for _ in range(self.max_new_tokens):
            out = model(encoder_outputs=encoder_outputs, attention_mask=mask, decoder_input_ids=dec,
                        use_cache=True, **{cache_kw: past})
            past = cache_out(out)
            tok, finished, log_q = self._step(out.logits[:, -1], finished, log_q)
            out_tokens.append(tok)
            if self._done(finished):
                break
            dec = tok[:, None]
        return torch.stack(out_tokens, dim=1), log_q
