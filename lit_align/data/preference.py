"""Preference data: (prompt, chosen, rejected) pairs for DPO, preference MLE, distillation and
reward models (Rafailov et al. 2023, arXiv:2305.18290; Yun et al. 2025, arXiv:2506.01523).

Records follow TRL's column conventions:

- **standard**: ``prompt``, ``chosen``, ``rejected`` are strings (``trl-lib/tldr-preference``);
- **conversational**: they are lists of ``{"role", "content"}`` messages; the prompt is
  rendered with the tokenizer's chat template and the completion is the assistant turn;
- **implicit prompt**: no prompt column; ``chosen``/``rejected`` hold whole texts (or
  conversations) and the prompt is their common prefix (TRL's ``extract_prompt``).

Pairs are tokenised with the method's own tokenizer and prompt encoding (so a prompt is
the same tokens the policy is sampled from), a completion is its tokens plus EOS, and
sequence log-probs count completion tokens only. Reference log-probs
(under the frozen π0) are computed once and cached on disk, keyed by the exact token ids
and the reference model: training then holds one model, not two.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import lightning as L
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lit_align.data.conditional import FileContextsDataModule, load_records, resolve_local
from lit_align.data.preference_pairs import (  # noqa: F401 - re-exported
    Pair,
    PreferenceBatch,
    cached_reference_log_probs,
    collate_pairs,
    compute_reference_log_probs,
    pad_samples,
    pairs_key,
    split_record,
    tokenize_pair,
)
from lit_align.data.resumable import resumable_loader


# ---------------------------------------------------------------------------- data module
class _Pairs(Dataset):
    def __init__(self, pairs: list[Pair]) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[int, Pair]:
        return i, self.pairs[i]


class PreferenceDataModule(L.LightningDataModule):
    """Preference pairs from a hub dataset or a local file (TRL formats, see the module docstring).

    The method tokenises the pairs with its own tokenizer through :meth:`connect` once its
    models exist; a method that uses reference log-probs (DPO) then computes them once under
    its frozen π0 (cached under :meth:`reference_cache_dir`).

    Args:
        dataset: hub name, local ``.json/.jsonl/.csv/.parquet`` file, or ``resource:NAME``.
        config_name, train_split, val_split: hub dataset configuration and splits.
        val_dataset: a separate local validation file; else ``val_split``, else a held-out
            ``val_fraction`` of the training records.
        prompt_column: null for implicit-prompt data (prompt = common prefix).
        chosen_column, rejected_column: the preferred and dispreferred completions.
        soft_label_column: optional column with P(chosen ≻ rejected) (synthetic data).
        batch_size: pairs per training step (the method accumulates over ``minibatch_size``).
        val_batch_size: pairs per validation batch (default ``batch_size``).
        max_train_pairs, max_val_pairs: keep at most this many pairs.
        max_completion_length: completion tokens kept (EOS included).
        append_eos: end every completion with the tokenizer's EOS (so the policy learns to stop).
        cache_reference: cache reference log-probs on disk (``cache_dir``, default
            ``<lit_align cache>/reference_log_probs``); False recomputes them each run.
        shuffle, seed: shuffling of the training pairs; ``seed`` also picks the held-out split.
    """

    OFFLINE_DATASET = "resource:preference_tldr_sample"  # a small TL;DR-style sample shipped with lit_align

    def __init__(
        self,
        dataset: str = "trl-lib/tldr-preference",
        config_name: str | None = None,
        train_split: str = "train",
        val_split: str | None = "validation",
        val_dataset: str | None = None,
        prompt_column: str | None = "prompt",
        chosen_column: str = "chosen",
        rejected_column: str = "rejected",
        soft_label_column: str | None = None,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        max_train_pairs: int | None = None,
        max_val_pairs: int | None = 64,
        max_completion_length: int | None = None,
        append_eos: bool = True,
        val_fraction: float = 0.1,
        cache_reference: bool = True,
        cache_dir: str | None = None,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1 or (val_batch_size is not None and val_batch_size < 1):
            raise ValueError("batch_size and val_batch_size must be ≥ 1")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.dataset, self.config_name = dataset, config_name
        self.train_split, self.val_split, self.val_dataset = train_split, val_split, val_dataset
        self.columns = (prompt_column, chosen_column, rejected_column)
        self.soft_label_column = soft_label_column
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.max_train_pairs, self.max_val_pairs = max_train_pairs, max_val_pairs
        self.max_completion_length, self.append_eos = max_completion_length, append_eos
        self.val_fraction, self.cache_reference, self.cache_dir = val_fraction, cache_reference, cache_dir
        self.shuffle, self.seed = shuffle, seed
        self.train_pairs: list[Pair] | None = None
        self.val_pairs: list[Pair] = []
        self._pad_id: int | None = None

    # ------------------------------------------------------------------ records
    def load_split_records(self) -> tuple[list[dict], list[dict]]:
        """Raw training and validation records."""
        hint = f"To run offline, use a local file or dataset: {self.OFFLINE_DATASET}. "
        records = load_records(self.dataset, self.train_split, self.config_name, hint)
        if records is None:
            raise ValueError(f"dataset {self.dataset!r} has no split {self.train_split!r}")
        if self.val_dataset is not None:
            return records, load_records(self.val_dataset, "train", None, hint) or []
        if resolve_local(self.dataset) is None and self.val_split is not None:
            val = load_records(self.dataset, self.val_split, self.config_name, hint)
            if val is not None:
                return records, val
        order = list(range(len(records)))
        random.Random(self.seed).shuffle(order)
        n_val = int(round(self.val_fraction * len(records)))
        if self.val_fraction > 0 and len(records) > 1:
            n_val = max(1, n_val)
        held = set(order[:n_val])
        return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]

    def to_pairs(self, records: list[dict], policy, where: str, limit: int | None) -> list[Pair]:
        out = []
        for i, r in enumerate(records[:limit] if limit is not None else records):
            prompt, chosen, rejected = split_record(r, *self.columns, where=f"{where}, record {i}")
            label = math.nan
            if self.soft_label_column is not None:
                if self.soft_label_column not in r:
                    raise ValueError(f"{where}: no soft-label column {self.soft_label_column!r} (it has {sorted(r)})")
                label = float(r[self.soft_label_column])
            out.append(tokenize_pair(policy, prompt, chosen, rejected, self.append_eos, self.max_completion_length, label))
        return out

    # ------------------------------------------------------------- preparation
    def connect(self, policy, base_model: nn.Module | None = None) -> None:
        """Tokenise the pairs with ``policy`` (a :class:`~lit_align.models.Policy`: the method's
        tokenizer and prompt encoding), so that a prompt is the same tokens the policy is
        sampled from. The method calls this once its models exist; ``base_model`` (its frozen
        π0) is for data modules that sample (:class:`SyntheticPreferenceDataModule`). Idempotent."""
        if self.train_pairs is not None:
            return
        train, val = self.load_split_records()
        where = f"dataset {self.dataset!r}"
        self.train_pairs = self.to_pairs(train, policy, where, self.max_train_pairs)
        self.val_pairs = self.to_pairs(val, policy, f"{where} (validation)", self.max_val_pairs)
        if not self.train_pairs:
            raise ValueError(f"{where}: no training pairs")
        self._pad_id = policy.pad_id

    def reference_cache_dir(self) -> Path | None:
        """Where reference log-probs of the pairs are cached (None: ``cache_reference: false``)."""
        if not self.cache_reference:
            return None
        from lit_align.models.loading import cache_dir

        return Path(self.cache_dir) if self.cache_dir else cache_dir() / "reference_log_probs"

    def _connected(self) -> None:
        if self.train_pairs is None:
            raise RuntimeError("PreferenceDataModule is not connected: the preference methods connect it when their "
                               "models are built; outside a Trainer call connect(policy) first")

    def _loader(self, pairs: list[Pair], batch_size: int, shuffle: bool) -> DataLoader:
        pad = self._pad_id

        def collate(items):
            return collate_pairs([p for _, p in items], pad, [i for i, _ in items])

        # resumable: shuffled by (seed_everything's seed, epoch); its position in the epoch is in the checkpoint
        return resumable_loader(_Pairs(pairs), batch_size, shuffle=shuffle, collate_fn=collate)

    def train_dataloader(self) -> DataLoader:
        self._connected()
        return self._loader(self.train_pairs, self.batch_size, self.shuffle)

    def val_dataloader(self) -> DataLoader:
        self._connected()
        return self._loader(self.val_pairs, self.val_batch_size, False)

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        return batch.to(device) if isinstance(batch, PreferenceBatch) else super().transfer_batch_to_device(
            batch, device, dataloader_idx)


class PreferencePromptsDataModule(FileContextsDataModule):
    """The prompts of a preference dataset, as contexts for on-policy methods (reverse KL / RLHF
    with a reward model, online preference distillation's prompts). Standard-format data only.

    Defaults: the TL;DR preference set's ``prompt`` column, with its ``chosen`` summary as the
    reference; offline, ``resource:preference_tldr_sample``. Arguments: :class:`FileContextsDataModule`.
    """

    OFFLINE_DATASET = "resource:preference_tldr_sample"

    def __init__(self, dataset: str = "trl-lib/tldr-preference", source_column: str = "prompt",
                 reference_column: str | None = "chosen", **kwargs) -> None:
        super().__init__(dataset=dataset, source_column=source_column, reference_column=reference_column, **kwargs)
