"""Preference pairs as tensors: records in TRL's formats → tokenised :class:`Pair` →
padded :class:`PreferenceBatch`, and the reference log-probs of the pairs, cached on disk
(the sequence log-probs of DPO, Rafailov et al. 2023, arXiv:2305.18290, and of Yun et al. 2025,
arXiv:2506.01523: sums over completion tokens). Used by :mod:`lit_align.data.preference`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from lit_align.models.policy import Samples
from lit_align.models.samples import pad_samples  # noqa: F401 - re-exported (data.preference)


@dataclass
class Pair:
    """One tokenised preference pair (completion ids include EOS when the tokenizer has one)."""

    context: str
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    chosen: str
    rejected: str
    soft_label: float = math.nan  # P(chosen ≻ rejected) when the data carries it
    ref_chosen: float = math.nan
    ref_rejected: float = math.nan


@dataclass
class PreferenceBatch:
    """A batch of pairs as one :class:`Samples` of 2n rows: chosen rows ``[0, n)``, rejected ``[n, 2n)``."""

    samples: Samples
    ref_chosen: Tensor | None  # (n,) float64 log π0(chosen), None when not cached
    ref_rejected: Tensor | None
    soft_label: Tensor | None  # (n,) P(chosen ≻ rejected), None when the data has none
    prompts: list[str]  # the context string of each pair
    index: Tensor  # (n,) position of each pair in its dataset

    def __len__(self) -> int:
        return len(self.prompts)

    def select(self, rows: slice | Tensor) -> "PreferenceBatch":
        idx = torch.arange(len(self))[rows] if isinstance(rows, slice) else rows
        both = torch.cat([idx, idx + len(self)])
        pick = (lambda t: None if t is None else t[idx])
        return replace(self, samples=self.samples.select(both), ref_chosen=pick(self.ref_chosen),
                       ref_rejected=pick(self.ref_rejected), soft_label=pick(self.soft_label),
                       prompts=[self.prompts[i] for i in idx.tolist()], index=self.index[idx])

    def to(self, device) -> "PreferenceBatch":
        s = self.samples
        samples = replace(s, prompt_ids=s.prompt_ids.to(device), prompt_mask=s.prompt_mask.to(device),
                          completion_ids=s.completion_ids.to(device), completion_mask=s.completion_mask.to(device),
                          log_q=s.log_q.to(device), context_index=s.context_index.to(device))
        mv = (lambda t: None if t is None else t.to(device))
        return replace(self, samples=samples, ref_chosen=mv(self.ref_chosen), ref_rejected=mv(self.ref_rejected),
                       soft_label=mv(self.soft_label), index=self.index.to(device))


def collate_pairs(pairs: Sequence[Pair], pad_id: int, index: Sequence[int] | None = None) -> PreferenceBatch:
    """Pad pairs into a :class:`PreferenceBatch` (prompts left-padded, completions right-padded)."""
    n = len(pairs)
    contexts = [p.context for p in pairs]
    samples = pad_samples([p.prompt_ids for p in pairs] * 2,
                          [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs], pad_id,
                          [p.chosen for p in pairs] + [p.rejected for p in pairs], contexts * 2)
    samples.context_index = torch.arange(n).repeat(2)

    def column(name: str) -> Tensor | None:
        values = torch.tensor([getattr(p, name) for p in pairs], dtype=torch.float64)
        return None if torch.isnan(values).any() else values

    idx = torch.as_tensor(list(index) if index is not None else range(n), dtype=torch.long)
    return PreferenceBatch(samples, column("ref_chosen"), column("ref_rejected"), column("soft_label"), contexts, idx)


# ------------------------------------------------------------------------ records → pairs
def _is_conversation(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]


def split_record(record: dict, prompt_column: str | None, chosen_column: str, rejected_column: str,
                 where: str) -> tuple[str | list, str, str]:
    """``(prompt, chosen completion, rejected completion)`` of one record in any TRL format.

    The prompt is a string or (conversational) a list of messages; completions are strings.
    """
    for col in (chosen_column, rejected_column) + ((prompt_column,) if prompt_column else ()):
        if col not in record:
            raise ValueError(f"{where}: no column {col!r} (it has {sorted(record)}); set prompt_column / "
                             "chosen_column / rejected_column (prompt_column: null for implicit-prompt data)")
    chosen, rejected = record[chosen_column], record[rejected_column]
    prompt = record[prompt_column] if prompt_column else None
    if _is_conversation(chosen) and _is_conversation(rejected):
        if prompt is None:  # implicit prompt: the shared leading messages
            k = 0
            while k < min(len(chosen), len(rejected)) - 1 and chosen[k] == rejected[k]:
                k += 1
            prompt, chosen, rejected = chosen[:k], chosen[k:], rejected[k:]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        if not _is_conversation(prompt):
            raise ValueError(f"{where}: conversational chosen/rejected need a conversational prompt, got {prompt!r:.200}")
        bad = [m["content"] for m in chosen + rejected if not isinstance(m["content"], str)]
        if bad:  # (found by tests/test_fuzz.py: a TypeError in the join before)
            raise ValueError(f"{where}: a message's content must be a string, got {type(bad[0]).__name__} "
                             f"({bad[0]!r:.80})")
        return prompt, "".join(m["content"] for m in chosen), "".join(m["content"] for m in rejected)
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        raise ValueError(f"{where}: chosen/rejected must both be strings or both be message lists; "
                         f"got {type(chosen).__name__} and {type(rejected).__name__}")
    if prompt is None:
        prompt = _common_prefix(chosen, rejected)
        chosen, rejected = chosen[len(prompt):], rejected[len(prompt):]
    if not isinstance(prompt, str):
        raise ValueError(f"{where}: prompt must be a string with string completions, got {type(prompt).__name__}")
    return prompt, chosen, rejected


def tokenize_pair(policy, prompt: str | list, chosen: str, rejected: str, append_eos: bool = True,
                  max_completion_length: int | None = None, soft_label: float = math.nan) -> Pair:
    """Tokenise one pair with a :class:`~lit_align.models.Policy` (its prompt encoding and tokenizer)."""
    tok = policy.tokenizer
    if isinstance(prompt, list):
        if policy.chat_template:
            raise ValueError("conversational preference data is rendered with the tokenizer's chat template "
                             "already; set the method's chat_template: false")
        if getattr(tok, "chat_template", None) is None:
            raise ValueError("conversational preference data needs a tokenizer with a chat template")
        prompt = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    eos = [policy.eos_id] if append_eos and policy.eos_id is not None else []

    def completion(text: str) -> list[int]:
        ids = list(tok(text, add_special_tokens=False)["input_ids"])
        if max_completion_length is not None:
            ids = ids[: max(max_completion_length - len(eos), 0)]
        return ids + eos

    c, r = completion(chosen), completion(rejected)
    if not c or not r:
        raise ValueError(f"empty completion in a preference pair (prompt {prompt!r:.80})")
    return Pair(prompt, policy.encode_context(prompt), c, r, chosen, rejected, soft_label)


# -------------------------------------------------------------------- reference log-probs
def pairs_key(pairs: Sequence[Pair], reference: str) -> str:
    """A digest of the exact token ids of all pairs and of the reference model's identity."""
    h = hashlib.sha256(reference.encode())
    for p in pairs:
        h.update(json.dumps([p.prompt_ids, p.chosen_ids, p.rejected_ids]).encode())
    return h.hexdigest()[:24]


@torch.no_grad()
def compute_reference_log_probs(model, policy, pairs: Sequence[Pair], batch_size: int = 8,
                                device=None) -> tuple[Tensor, Tensor]:
    """``(log π0(chosen), log π0(rejected))`` of every pair (float64, on CPU)."""
    chosen, rejected = [], []
    for start in range(0, len(pairs), batch_size):
        batch = collate_pairs(pairs[start:start + batch_size], policy.pad_id)
        if device is not None:
            batch = batch.to(device)
        lp = policy.log_prob(model, batch.samples).double().cpu()
        n = len(batch)
        chosen.append(lp[:n])
        rejected.append(lp[n:])
    return torch.cat(chosen), torch.cat(rejected)


def set_reference_log_probs(pairs: Sequence[Pair], chosen: Tensor, rejected: Tensor) -> None:
    """Store reference log-probs on the pairs (they travel with them into every batch)."""
    for p, lc, lr in zip(pairs, chosen.tolist(), rejected.tolist()):
        p.ref_chosen, p.ref_rejected = lc, lr


def cached_reference_log_probs(model, policy, pairs: Sequence[Pair], reference: str, cache_dir: Path | None,
                               batch_size: int = 8, device=None) -> tuple[Tensor, Tensor, bool]:
    """Reference log-probs, read from ``cache_dir/<key>.pt`` when present, else computed and
    written there. Returns ``(chosen, rejected, from_cache)``."""
    path = None if cache_dir is None else Path(cache_dir) / f"{pairs_key(pairs, reference)}.pt"
    if path is not None and path.is_file():
        saved = torch.load(path, weights_only=True)
        if saved["chosen"].shape[0] == len(pairs):
            return saved["chosen"], saved["rejected"], True
    chosen, rejected = compute_reference_log_probs(model, policy, pairs, batch_size, device)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # one temporary name per process (forked ranks share Python's random state)
        tmp = path.with_suffix(f".tmp{os.getpid()}-{uuid.uuid4().hex[:8]}")
        torch.save({"chosen": chosen, "rejected": rejected, "reference": reference}, tmp)
        tmp.replace(path)
    return chosen, rejected, False
