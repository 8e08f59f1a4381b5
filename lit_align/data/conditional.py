"""Conditional tasks of CDPG (Korbak et al. 2022, arXiv:2112.00791): translation,
summarization and code contexts.

A data module emits batches of *contexts* (the method samples completions for each). A
context is a :class:`Context`: the prompt string the model sees, which also carries the
raw ``source`` text (for scorers such as numeral or entity consistency) and the
``reference`` output when the data has one (for BLEU / ROUGE).

Where the records come from (``dataset:``):

- a local ``.json`` / ``.jsonl`` / ``.csv`` / ``.parquet`` file, read with
  ``datasets.load_dataset("json" | "csv" | "parquet", data_files=...)``;
- ``resource:NAME``: a small sample shipped in ``lit_align/resources/`` (offline defaults);
- ``stdlib`` (code only): function signatures and docstrings from the Python standard
  library's own sources;
- any other string: a Hugging Face hub dataset name (``cnn_dailymail``, ...). Without a
  reachable hub this fails at once with :class:`DatasetLoadError` saying how to run offline.

Columns may be nested with dots (``translation.en`` for ``{"translation": {"en": ...}}``).
Validation contexts come from ``val_split`` (hub), ``val_dataset`` (a second file), or else
a deterministic held-out ``val_fraction`` of the training records.
"""

from __future__ import annotations

import random
import zlib
from typing import Sequence

import lightning as L
from torch.utils.data import DataLoader, Dataset

from lit_align.contexts import Context, source_of  # noqa: F401 - re-exported
from lit_align.data.prompts import collate_contexts
from lit_align.data.records import DatasetLoadError, _check_columns, _column, load_records, resolve_local  # noqa: F401
from lit_align.data.resumable import resumable_loader
from lit_align.data.stdlib_code import stdlib_functions  # noqa: F401 - re-exported


class _Contexts(Dataset):
    def __init__(self, contexts: Sequence[str]) -> None:
        self.contexts = list(contexts)

    def __len__(self) -> int:
        return len(self.contexts)

    def __getitem__(self, i: int) -> str:
        return self.contexts[i]


class ContextsDataModule(L.LightningDataModule):
    """Batches of contexts for conditional on-policy methods.

    Args:
        contexts_per_step: contexts per training batch (the method draws ``n_samples`` for each;
            the paper's batch is contexts_per_step × n_samples).
        steps_per_epoch: training batches per epoch, contexts drawn uniformly with replacement
            (as in the CDPG code); None: one shuffled pass over the training contexts.
        val_contexts_per_step: contexts per validation batch.
        max_val_contexts: validation contexts used (the first ones, fixed).
    """

    def __init__(self, contexts_per_step: int = 8, steps_per_epoch: int | None = 1000,
                 val_contexts_per_step: int = 8, max_val_contexts: int | None = 64) -> None:
        super().__init__()
        if contexts_per_step < 1 or val_contexts_per_step < 1:
            raise ValueError("contexts_per_step and val_contexts_per_step must be ≥ 1")
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be ≥ 1 or null, got {steps_per_epoch}")
        self.contexts_per_step = contexts_per_step
        self.steps_per_epoch = steps_per_epoch
        self.val_contexts_per_step = val_contexts_per_step
        self.max_val_contexts = max_val_contexts
        self.train_contexts: list[Context] | None = None
        self.val_contexts: list[Context] | None = None

    def load_contexts(self) -> tuple[list[Context], list[Context]]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_contexts is None:
            train, val = self.load_contexts()
            if not train:
                raise ValueError(f"{type(self).__name__}: no training contexts")
            self.train_contexts = train
            self.val_contexts = val[: self.max_val_contexts] if self.max_val_contexts is not None else val

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        ds = _Contexts(self.train_contexts)
        # resumable: the contexts are drawn from (seed_everything's seed, epoch), and the position in
        # the epoch is in the checkpoint, so a resumed run draws the contexts an uninterrupted one would
        if self.steps_per_epoch is None:
            return resumable_loader(ds, self.contexts_per_step, shuffle=True, collate_fn=collate_contexts)
        return resumable_loader(ds, self.contexts_per_step, replacement=True,
                                num_samples=self.steps_per_epoch * self.contexts_per_step, collate_fn=collate_contexts)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return DataLoader(_Contexts(self.val_contexts or []), batch_size=self.val_contexts_per_step,
                          collate_fn=collate_contexts)

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()


class ContextListDataModule(ContextsDataModule):
    """Contexts given inline (e.g. toy prefixes ``["a", "b"]``); validation reuses them unless given."""

    def __init__(self, contexts: Sequence[str], val_contexts: Sequence[str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if not contexts:
            raise ValueError("ContextListDataModule: `contexts` is empty")
        self._train = [Context(c) for c in contexts]
        self._val = [Context(c) for c in (val_contexts if val_contexts is not None else contexts)]

    def load_contexts(self) -> tuple[list[Context], list[Context]]:
        return self._train, self._val


class FileContextsDataModule(ContextsDataModule):
    """Contexts (and references) read from a hub dataset or a local json/jsonl/csv/parquet file.

    Args:
        dataset: hub name, local file, or ``resource:NAME`` (see the module docstring).
        config_name: hub dataset configuration (e.g. ``3.0.0`` for cnn_dailymail).
        train_split, val_split: hub splits; a missing validation split falls back to ``val_fraction``.
        val_dataset: a separate local file for validation (instead of ``val_fraction``).
        source_column: the source text column (dots for nested fields).
        reference_column: the reference output column, or null.
        prompt_template: how the model sees a source: ``{source}`` is replaced (e.g.
            ``"summarize: {source}"`` for T5).
        max_source_chars: longer sources are cut (at a word boundary) before templating.
        max_train_contexts: keep at most this many training contexts (after filtering).
        val_fraction: held-out share of the records when there is no validation split/file.
        seed: for the held-out split.
    """

    OFFLINE_CONFIG = ""  # the shipped config that runs the task offline (named in errors)
    OFFLINE_DATASET = ""  # the shipped sample the offline config reads

    def __init__(self, dataset: str, config_name: str | None = None, train_split: str = "train",
                 val_split: str | None = "validation", val_dataset: str | None = None,
                 source_column: str = "source", reference_column: str | None = "reference",
                 prompt_template: str = "{source}", max_source_chars: int | None = None,
                 max_train_contexts: int | None = None, val_fraction: float = 0.1, seed: int = 0,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if "{source}" not in prompt_template:
            raise ValueError(f"prompt_template must contain '{{source}}', got {prompt_template!r}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.dataset, self.config_name = dataset, config_name
        self.train_split, self.val_split, self.val_dataset = train_split, val_split, val_dataset
        self.source_column, self.reference_column = source_column, reference_column
        self.prompt_template = prompt_template
        self.max_source_chars = max_source_chars
        self.max_train_contexts = max_train_contexts
        self.val_fraction, self.seed = val_fraction, seed

    def offline_hint(self) -> str:
        if not self.OFFLINE_CONFIG:
            return ""
        return (f"To run offline, use the offline variant: python -m lit_align fit --config "
                f"configs/{self.OFFLINE_CONFIG} (shipped data, `model: smollm2`). ")

    def keep(self, source: str) -> bool:
        """Filter on the source text (all kept by default)."""
        return True

    def to_contexts(self, records: list[dict], where: str) -> list[Context]:
        if not records:
            return []
        _check_columns(list(records[0].keys()), [self.source_column, self.reference_column], where, records[0])
        out = []
        for r in records:
            source = _column(r, self.source_column, where)
            if source is None or not str(source).strip():
                continue
            source = str(source).strip()
            if self.max_source_chars is not None and len(source) > self.max_source_chars:
                source = source[: self.max_source_chars].rsplit(" ", 1)[0]
            if not self.keep(source):
                continue
            ref = _column(r, self.reference_column, where) if self.reference_column else None
            out.append(Context(self.prompt_template.replace("{source}", source), source,
                               None if ref is None else str(ref)))
        return out

    def load_contexts(self) -> tuple[list[Context], list[Context]]:
        hint = self.offline_hint()
        where = f"dataset {self.dataset!r}"
        local = resolve_local(self.dataset) is not None
        records = load_records(self.dataset, self.train_split, self.config_name, hint)
        if self.val_dataset is not None:
            val_records = load_records(self.val_dataset, "train", None, hint)
            train, val = self.to_contexts(records, where), self.to_contexts(val_records, f"dataset {self.val_dataset!r}")
        else:
            val_records = None if local or self.val_split is None else load_records(
                self.dataset, self.val_split, self.config_name, hint)
            contexts = self.to_contexts(records, where)
            if val_records is not None:
                train, val = contexts, self.to_contexts(val_records, f"{where} split {self.val_split!r}")
            else:
                order = list(range(len(contexts)))
                random.Random(self.seed).shuffle(order)
                n_val = int(round(self.val_fraction * len(contexts)))
                if self.val_fraction > 0 and len(contexts) > 1:
                    n_val = max(1, n_val)
                held = set(order[:n_val])
                train = [c for i, c in enumerate(contexts) if i not in held]
                val = [c for i, c in enumerate(contexts) if i in held]
        if not train:
            raise ValueError(f"{where}: no usable training contexts in column {self.source_column!r}"
                             + (" after filtering" if type(self).keep is not FileContextsDataModule.keep else ""))
        if self.max_train_contexts is not None:
            train = train[: self.max_train_contexts]
        return train, val


# --------------------------------------------------------------------------- the tasks
class TranslationDataModule(FileContextsDataModule):
    """Sentences to translate (CDPG's terminology-consistent translation).

    Defaults follow the paper: Europarl v7 en→fr from the hub (``translation.en`` /
    ``translation.fr``), T5's task prefix, and only sentences containing a numeral
    (``require_numerals``; digits or number words of the numeral scorer's phrase table).
    Offline: ``dataset: resource:translation_en_fr`` (a small sample shipped with lit_align).
    """

    OFFLINE_CONFIG = "cdpg_translate_offline.yaml"
    OFFLINE_DATASET = "resource:translation_en_fr"

    def __init__(self, dataset: str = "Helsinki-NLP/europarl", config_name: str | None = "en-fr",
                 source_column: str = "translation.en", reference_column: str | None = "translation.fr",
                 prompt_template: str = "translate English to French: {source}", require_numerals: bool = True,
                 max_source_chars: int | None = 400, **kwargs) -> None:
        super().__init__(dataset=dataset, config_name=config_name, source_column=source_column,
                         reference_column=reference_column, prompt_template=prompt_template,
                         max_source_chars=max_source_chars, **kwargs)
        self.require_numerals = require_numerals

    def keep(self, source: str) -> bool:
        if not self.require_numerals:
            return True
        from lit_align.scorers.numeral import find_numbers

        return bool(find_numbers(source))


class SummarizationDataModule(FileContextsDataModule):
    """News articles to summarise (CDPG's factually consistent summarization).

    Defaults follow the paper: CNN/DailyMail 3.0.0 from the hub (``article`` → ``highlights``)
    with T5's ``summarize:`` prefix. Offline: ``dataset: resource:summarization_news``.
    """

    OFFLINE_CONFIG = "cdpg_summarize_offline.yaml"
    OFFLINE_DATASET = "resource:summarization_news"

    def __init__(self, dataset: str = "cnn_dailymail", config_name: str | None = "3.0.0",
                 source_column: str = "article", reference_column: str | None = "highlights",
                 prompt_template: str = "summarize: {source}", max_source_chars: int | None = 2000,
                 **kwargs) -> None:
        super().__init__(dataset=dataset, config_name=config_name, source_column=source_column,
                         reference_column=reference_column, prompt_template=prompt_template,
                         max_source_chars=max_source_chars, **kwargs)


class CodeDataModule(FileContextsDataModule):
    """Python function signatures to complete (CDPG's compilability / PEP8 tasks).

    ``dataset: stdlib`` (default, offline): signatures (with docstrings when ``docstring``)
    of standard-library functions; ~10% of functions (by a hash of their qualified name)
    are held out for validation. A file needs a ``source_column`` (``signature``) holding
    code that ends where the body starts. The paper used GPT-Neo-125M on signature-only
    prompts (``docstring: false``); chat models get ``prompt_template`` with an instruction.
    """

    OFFLINE_CONFIG = "cdpg_code_compile_offline.yaml"
    OFFLINE_DATASET = "stdlib"

    def __init__(self, dataset: str = "stdlib", source_column: str = "signature",
                 reference_column: str | None = None, prompt_template: str = "{source}",
                 docstring: bool = True, max_functions: int = 2000, **kwargs) -> None:
        super().__init__(dataset=dataset, source_column=source_column, reference_column=reference_column,
                         prompt_template=prompt_template, **kwargs)
        self.docstring, self.max_functions = docstring, max_functions

    def load_contexts(self) -> tuple[list[Context], list[Context]]:
        if self.dataset != "stdlib":
            return super().load_contexts()
        train, val = [], []
        for name, prompt, body in stdlib_functions(self.max_functions, self.docstring):
            ctx = Context(self.prompt_template.replace("{source}", prompt), prompt, body)
            (val if zlib.crc32(name.encode()) % 10 == 0 else train).append(ctx)
        if self.max_train_contexts is not None:
            train = train[: self.max_train_contexts]
        return train, val
