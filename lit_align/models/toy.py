"""The exact toy space (docs/toy_space.md): sequences of T tokens over V letters, enumerable.

``ToyLM`` is a tabular autoregressive LM (one logit vector per prefix), so every
distribution over the space is reachable and every method's population optimum is
attainable. ``ToySpace`` enumerates the space and computes exact quantities.
"""

from __future__ import annotations

import itertools
import string
from types import SimpleNamespace

import torch
from torch import Tensor, nn


class ToyTokenizer:
    """Letters ``a, b, c, ...`` are ids ``0..V-1``; then BOS (``V``) and PAD (``V+1``). No EOS."""

    def __init__(self, vocab_size: int = 4) -> None:
        self.vocab_size = vocab_size
        self.letters = string.ascii_lowercase[:vocab_size]
        self.bos_token_id = vocab_size
        self.pad_token_id = vocab_size + 1
        self.eos_token_id = None
        self.bos_token, self.pad_token, self.eos_token = "<s>", "<pad>", None
        self.chat_template = None

    def __len__(self) -> int:
        return self.vocab_size + 2

    def __call__(self, text: str, add_special_tokens: bool = True, **_: object) -> dict:
        ids = [self.letters.index(ch) for ch in text]
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + ids}

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return "".join(self.letters[i] for i in ids if i < self.vocab_size)

    def batch_decode(self, batch, skip_special_tokens: bool = True) -> list[str]:
        return [self.decode(row, skip_special_tokens) for row in batch]


class ToyLM(nn.Module):
    """Tabular autoregressive LM: ``log a(x_t | x_<t)`` is a free logit vector per prefix,
    initialised from N(0, scale²) with ``seed``.

    ``forward`` accepts the usual Hugging Face arguments and ignores the cache (the space is
    tiny, so the sampler recomputes the whole sequence at each step).
    """

    supports_cache = False

    def __init__(self, vocab_size: int = 4, length: int = 4, seed: int = 0, scale: float = 1.0) -> None:
        super().__init__()
        self.vocab_size, self.length = vocab_size, length
        # offsets[t]: first row of the prefixes of t letters, t = 0..length (full sequences last)
        self.offsets = [sum(vocab_size**k for k in range(t)) for t in range(length + 2)]
        gen = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(scale * torch.randn(self.offsets[length], vocab_size, generator=gen))
        # hidden_size: the "hidden state" is the one-hot prefix, full sequences included (``forward``)
        self.config = SimpleNamespace(is_encoder_decoder=False, vocab_size=vocab_size + 2, hidden_size=self.offsets[-1])

    def prefix_index(self, input_ids: Tensor) -> Tensor:
        """State after each position: the index of the prefix of letters seen so far, among all
        prefixes of 0..length letters (full sequences included; longer ones are clamped to the
        first full sequence, and are never sampled from)."""
        is_letter = input_ids < self.vocab_size
        count = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        value = torch.zeros_like(count)
        offsets = torch.tensor(self.offsets, device=input_ids.device)
        out = []
        for j in range(input_ids.shape[1]):
            lj = is_letter[:, j]
            value = torch.where(lj, value * self.vocab_size + input_ids[:, j].clamp(max=self.vocab_size - 1), value)
            count = count + lj.long()
            out.append(offsets[count.clamp(max=self.length)] + torch.where(count <= self.length, value, 0))
        return torch.stack(out, dim=1)

    def forward(self, input_ids: Tensor, output_hidden_states: bool = False, **kwargs: object) -> SimpleNamespace:
        """Logits (B, L, V+2); with ``output_hidden_states`` also ``hidden_states = (h,)`` where
        ``h`` (B, L, #prefixes) is the one-hot of the prefix at each position: a linear head on
        it is a tabular function of the state (PPO's value head; a reward model's head, read
        after the last letter, where every full sequence has its own state)."""
        index = self.prefix_index(input_ids)
        # after a full sequence there is no next letter: any row will do (its logits are never used)
        logits = self.table[index.clamp(max=self.offsets[self.length] - 1)]  # (B, L, V)
        pad = torch.full((*logits.shape[:2], 2), float("-inf"), device=logits.device, dtype=logits.dtype)
        out = SimpleNamespace(logits=torch.cat([logits, pad], dim=-1), past_key_values=None)
        if output_hidden_states:
            out.hidden_states = (torch.nn.functional.one_hot(index, self.offsets[-1]).to(self.table.dtype),)
        return out


class ToySpace:
    """All ``V**T`` sequences, their texts, and exact log-probabilities under a ToyLM."""

    def __init__(self, vocab_size: int = 4, length: int = 4) -> None:
        self.vocab_size, self.length = vocab_size, length
        self.tokenizer = ToyTokenizer(vocab_size)
        self.sequences = torch.tensor(list(itertools.product(range(vocab_size), repeat=length)))
        self.texts = self.tokenizer.batch_decode(self.sequences)

    def __len__(self) -> int:
        return self.sequences.shape[0]

    def log_probs(self, model: ToyLM) -> Tensor:
        """Exact ``log a(x)`` for every x of the space (differentiable in the table)."""
        bos = torch.full((len(self), 1), self.tokenizer.bos_token_id)
        ids = torch.cat([bos, self.sequences], dim=1)
        logits = model(ids).logits[:, :-1, : self.vocab_size]
        logp = torch.log_softmax(logits.double(), dim=-1)
        return logp.gather(-1, self.sequences.unsqueeze(-1)).squeeze(-1).sum(-1)

    def index(self, texts: list[str]) -> Tensor:
        lookup = {t: i for i, t in enumerate(self.texts)}
        return torch.tensor([lookup[t] for t in texts])
