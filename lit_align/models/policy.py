"""Sampling and sequence log-probabilities for causal and encoder-decoder LMs.

The sampler is exact ancestral sampling with a KV cache (temperature 1, no top-k/top-p)
unless a warp is set explicitly; the log-probs it returns are those of the distribution it
actually sampled from. :meth:`Policy.log_prob` recomputes the *unwarped* log-probs of given
samples under any model sharing the tokenizer (policy, base, proposal).

Sequence log-probs are sums over completion tokens only: prompt, padding and tokens after
the first EOS are masked (the EOS itself counts).
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import Tensor, nn

from lit_align.models.decoding import Decoding
from lit_align.models.draw import InverseCDFSampler
from lit_align.models.forward import completion_forward
from lit_align.models.limits import check_prompt_fits
from lit_align.models.logprobs import selected_log_probs
from lit_align.models.samples import Samples, TokenOutputs  # noqa: F401 - re-exported
from lit_align.models.settings import SamplingSettings


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s weights are."""
    device = getattr(model, "device", None)  # HF/peft models and lit_align's adapter views
    return device if isinstance(device, torch.device) else next(model.parameters()).device


def _disable_dropout(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        # functional dropout rates kept as float attributes (e.g. T5Attention.dropout) act in train mode
        for name, value in list(vars(m).items()):
            if "dropout" in name and type(value) is float:
                setattr(m, name, 0.0)


class Policy(Decoding):
    """Tokenisation, sampling and scoring around a tokenizer (shared by all model copies)."""

    def __init__(
        self,
        tokenizer,
        max_new_tokens: int = 40,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        chat_template: bool = False,
        max_prompt_length: int | None = None,
        *,
        settings: SamplingSettings | None = None,
    ) -> None:
        if settings is None:
            settings = SamplingSettings(max_new_tokens, temperature, top_k, top_p, chat_template, max_prompt_length)
        self.settings = settings
        self.tokenizer = tokenizer
        self.max_new_tokens = settings.max_new_tokens
        self.temperature, self.top_k, self.top_p = settings.temperature, settings.top_k, settings.top_p
        self.chat_template = chat_template = settings.chat_template
        self.max_prompt_length = settings.max_prompt_length
        if chat_template and getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("chat_template=True but the tokenizer has no chat template; set chat_template: false")
        self.pad_id = tokenizer.pad_token_id
        self.eos_id = tokenizer.eos_token_id
        self._draw = InverseCDFSampler()

    @property
    def exact(self) -> bool:
        """True for pure ancestral sampling, where sampled log-probs equal the model's."""
        return self.temperature == 1.0 and self.top_k == 0 and self.top_p == 1.0

    # ----------------------------------------------------------------- prompts
    def encode_context(self, context: str, seq2seq: bool = False) -> list[int]:
        tok = self.tokenizer
        if self.chat_template:
            messages = [{"role": "user", "content": context}]
            ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        elif context == "" and not seq2seq:
            if tok.bos_token_id is None:
                raise ValueError("empty context with a tokenizer that has no BOS token: give a prompt")
            ids = [tok.bos_token_id]
        else:
            ids = list(tok(context, add_special_tokens=True)["input_ids"])
            if not ids:
                ids = [tok.bos_token_id if tok.bos_token_id is not None else self.pad_id]
        if self.max_prompt_length is not None and len(ids) > self.max_prompt_length:
            warnings.warn(
                f"prompt of {len(ids)} tokens truncated to its last {self.max_prompt_length} (max_prompt_length)",
                stacklevel=2,
            )
            ids = ids[-self.max_prompt_length :]
        return ids

    def encode_contexts(self, contexts: Sequence[str], seq2seq: bool = False, device=None) -> tuple[Tensor, Tensor]:
        """Left-padded ``(ids, mask)`` for a list of contexts."""
        return self.left_pad([self.encode_context(c, seq2seq) for c in contexts], device)

    def left_pad(self, rows: Sequence[Sequence[int]], device=None) -> tuple[Tensor, Tensor]:
        """Left-padded ``(ids, mask)`` for encoded prompts."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
        return ids.to(device), mask.to(device)

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(self, model: nn.Module, contexts: Sequence[str], n_per_context: int) -> Samples:
        """Draw ``n_per_context`` completions for each context (rows grouped by context)."""
        seq2seq = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
        device = model_device(model)
        was_training = model.training
        model.eval()
        try:
            ids, mask = self.encode_contexts(contexts, seq2seq, device)
            check_prompt_fits(model, ids.shape[1], self.max_new_tokens)  # a clear error, not an index error
            # the prompt is encoded once per context; its states are shared by the n samples
            if seq2seq:
                tokens, log_q = self._sample_seq2seq(model, ids, mask, n_per_context)
            else:
                tokens, log_q = self._sample_causal(model, ids, mask, n_per_context)
        finally:
            model.train(was_training)
        return self.make_samples(ids, mask, tokens, log_q, contexts, n_per_context)

    def make_samples(self, ids: Tensor, mask: Tensor, tokens: Tensor, log_q: Tensor, contexts: Sequence[str],
                     n_per_context: int) -> Samples:
        """:class:`Samples` from the prompts (one row per context) and the drawn completions (rows
        grouped by context): everything after the first EOS becomes padding, texts are decoded."""
        comp_mask = self.completion_mask(tokens)
        tokens = tokens.masked_fill(comp_mask == 0, self.pad_id)
        ctx_index = torch.arange(len(contexts), device=tokens.device).repeat_interleave(n_per_context)
        return Samples(
            prompt_ids=ids.repeat_interleave(n_per_context, 0),
            prompt_mask=mask.repeat_interleave(n_per_context, 0),
            completion_ids=tokens,
            completion_mask=comp_mask,
            log_q=log_q,
            texts=self.decode(tokens, comp_mask),
            contexts=[contexts[i] for i in ctx_index.tolist()],
            context_index=ctx_index,
        )

    def completion_mask(self, tokens: Tensor) -> Tensor:
        """1 up to and including the first EOS, 0 after; all ones if there is no EOS."""
        if self.eos_id is None:
            return torch.ones_like(tokens)
        is_eos = (tokens == self.eos_id).long()
        after_first = (is_eos.cumsum(-1) - is_eos) > 0
        return (~after_first).long()

    def decode(self, tokens: Tensor, comp_mask: Tensor) -> list[str]:
        rows = []
        for row, m in zip(tokens.tolist(), comp_mask.tolist()):
            kept = [t for t, keep in zip(row, m) if keep and t != self.eos_id]
            rows.append(kept)
        return self.tokenizer.batch_decode(rows, skip_special_tokens=True)

    # ----------------------------------------------------------------- scoring
    #: Run a prompt shared by several rows once and its completions on the repeated KV cache
    #: (lit_align/models/forward.py); False: one pass on prompt + completion per row.
    share_prompts: bool = True

    def token_log_probs(self, model: nn.Module, samples: Samples) -> Tensor:
        """Per-token log-probs (B, Lc) in float32 under ``model``, masked to 0 off-completion."""
        return self.token_outputs(model, samples, hidden=False).log_probs

    def token_outputs(
        self, model: nn.Module, samples: Samples, hidden: bool = True, entropy: bool = False
    ) -> "TokenOutputs":
        """Per-token log-probs, last-layer hidden states and entropies in one forward pass.

        ``hidden[:, t]`` is the final hidden state at the position that predicts completion
        token t (the state a value head reads, as in Ziegler et al.'s value head on GPT-2);
        ``entropy[:, t]`` is H(π(·|prompt, y_<t)). Log-probs equal :meth:`token_log_probs`.
        Entries off the completion mask are 0.
        """
        logits, states, used = completion_forward(model, samples, hidden, self.share_prompts)
        m = used.completion_mask
        # float32 z[y] − logsumexp(z), chunked: no full-vocabulary log-softmax of the batch
        log_probs = selected_log_probs(logits, used.completion_ids) * m
        h = ent = None
        if hidden:
            h = _widen(states * m.unsqueeze(-1).to(states.dtype), samples)
        if entropy:
            logp = torch.log_softmax(logits.float(), dim=-1)
            ent = _widen(-(logp.exp() * logp.masked_fill(torch.isinf(logp), 0.0)).sum(-1) * m, samples)
        return TokenOutputs(_widen(log_probs, samples), h, ent)

    def log_prob(self, model: nn.Module, samples: Samples, batch_size: int | None = None) -> Tensor:
        """Sequence log-probs (B,) of the completions under ``model`` (unwarped)."""
        if batch_size is None or batch_size >= len(samples):
            return self.token_log_probs(model, samples).sum(-1)
        return torch.cat([self.token_log_probs(model, mb).sum(-1) for mb in samples.minibatches(batch_size)])


def _widen(x: Tensor, samples: Samples) -> Tensor:
    """Per-token values of trimmed samples (B, L, ...) zero-padded to the completion width of ``samples``."""
    missing = samples.completion_ids.shape[1] - x.shape[1]
    if missing == 0:
        return x
    return torch.cat([x, x.new_zeros(x.shape[0], missing, *x.shape[2:])], dim=1)


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout probability to 0 so that the trained and sampled distributions agree."""
    _disable_dropout(model)
