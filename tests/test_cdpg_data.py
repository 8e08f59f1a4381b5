"""Conditional data modules: local json/jsonl/csv/parquet, shipped samples, stdlib code prompts, errors."""

from __future__ import annotations

import ast
import json
import pickle

import pytest

from lit_align.data import (
    CodeDataModule,
    Context,
    ContextListDataModule,
    DatasetLoadError,
    FileContextsDataModule,
    SummarizationDataModule,
    TranslationDataModule,
)
from lit_align.data.conditional import stdlib_functions
from lit_align.scorers.code import compiles


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [{"doc": f"Article number {i} about Paris.", "sum": f"Summary {i}."} for i in range(20)]


def test_local_jsonl_contexts_references_and_split(tmp_path):
    path = _write_jsonl(tmp_path / "news.jsonl", ROWS)
    dm = SummarizationDataModule(dataset=str(path), source_column="doc", reference_column="sum",
                                 val_fraction=0.25, contexts_per_step=3, steps_per_epoch=4, max_val_contexts=None)
    dm.setup("fit")
    assert len(dm.train_contexts) == 15 and len(dm.val_contexts) == 5
    train_sources = {c.source for c in dm.train_contexts}
    assert not train_sources & {c.source for c in dm.val_contexts}  # held out
    c = dm.train_contexts[0]
    assert isinstance(c, Context) and c == "summarize: " + c.source
    i = int(c.source.split()[2])
    assert c.reference == f"Summary {i}."
    batches = list(dm.train_dataloader())
    assert len(batches) == 4 and all(len(b) == 3 and isinstance(b[0], Context) for b in batches)
    # the same split every time (seeded)
    dm2 = SummarizationDataModule(dataset=str(path), source_column="doc", reference_column="sum", val_fraction=0.25)
    dm2.setup()
    assert [c.source for c in dm2.val_contexts] == [c.source for c in dm.val_contexts]
    # contexts survive pickling (DDP spawn, dataloader workers) with their fields
    back = pickle.loads(pickle.dumps(c))
    assert back == c and back.source == c.source and back.reference == c.reference


def test_local_csv_parquet_and_val_file(tmp_path):
    import pandas as pd

    df = pd.DataFrame({"src": ["one cat", "two dogs", "no number here", "three birds"], "tgt": ["1 chat", "2 chiens", "x", "3 oiseaux"]})
    csv = tmp_path / "pairs.csv"
    df.to_csv(csv, index=False)
    pq = tmp_path / "val.parquet"
    df.iloc[:2].to_parquet(pq)
    dm = TranslationDataModule(dataset=str(csv), val_dataset=str(pq), source_column="src", reference_column="tgt")
    dm.setup()
    # require_numerals keeps sentences with a numeral only (Europarl-style numeral sentences)
    assert [c.source for c in dm.train_contexts] == ["one cat", "two dogs", "three birds"]
    assert [c.reference for c in dm.val_contexts] == ["1 chat", "2 chiens"]
    assert dm.train_contexts[0] == "translate English to French: one cat"


def test_nested_columns_and_shipped_samples():
    dm = TranslationDataModule(dataset="resource:translation_en_fr")
    dm.setup()
    assert len(dm.train_contexts) > 80 and len(dm.val_contexts) > 5
    assert all(c.reference for c in dm.train_contexts)
    sm = SummarizationDataModule(dataset="resource:summarization_news")
    sm.setup()
    assert len(sm.train_contexts) + len(sm.val_contexts) >= 40


def test_missing_file_column_and_hub_errors(tmp_path, monkeypatch):
    path = _write_jsonl(tmp_path / "news.jsonl", ROWS)
    with pytest.raises(ValueError, match=r"news\.jsonl.*no column 'article'.*\['doc', 'sum'\]"):
        SummarizationDataModule(dataset=str(path)).setup()
    with pytest.raises(ValueError, match="no column 'highlights'"):
        SummarizationDataModule(dataset=str(path), source_column="doc").setup()
    with pytest.raises(ValueError, match="has no field 'doc.en'"):
        SummarizationDataModule(dataset=str(path), source_column="doc.en", reference_column=None).setup()
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        SummarizationDataModule(dataset=str(tmp_path / "missing.jsonl")).setup()
    with pytest.raises(FileNotFoundError, match="no shipped resource"):
        SummarizationDataModule(dataset="resource:nope").setup()
    bad = tmp_path / "data.txt"
    bad.write_text("x")
    with pytest.raises(ValueError, match="unsupported type"):
        SummarizationDataModule(dataset=str(bad)).setup()
    # a hub name without a hub: fails at once, naming the offline config to run instead
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetLoadError, match="cdpg_summarize_offline.yaml"):
        SummarizationDataModule().setup()
    with pytest.raises(DatasetLoadError, match="cdpg_translate_offline.yaml"):
        TranslationDataModule().setup()
    with pytest.raises(ValueError, match="prompt_template"):
        FileContextsDataModule(dataset=str(path), prompt_template="no placeholder")


def test_stdlib_code_prompts():
    funcs = stdlib_functions(max_functions=60)
    assert len(funcs) == 60 and len({name for name, _, _ in funcs}) == 60
    for name, prompt, body in funcs:
        assert prompt.startswith(("def ", "async def ")) and prompt.endswith("\n")
        assert compiles(prompt + body), name  # the real body completes the prompt
        fn = ast.parse(prompt + body).body[0]
        assert ast.get_docstring(fn) is not None and fn.body[0].end_lineno == prompt.count("\n")  # docstring last
    sig_only = stdlib_functions(max_functions=5, docstring=False)
    assert all(p.count("\n") <= 3 and '"""' not in p for _, p, _ in sig_only)
    dm = CodeDataModule(max_functions=200, prompt_template="Complete:\n{source}")
    dm.setup()
    assert len(dm.train_contexts) + len(dm.val_contexts) == 200 and dm.val_contexts
    assert {c.source for c in dm.train_contexts}.isdisjoint({c.source for c in dm.val_contexts})
    assert dm.train_contexts[0].startswith("Complete:\ndef") and dm.train_contexts[0].reference


def test_code_from_a_file(tmp_path):
    path = _write_jsonl(tmp_path / "sigs.jsonl", [{"signature": "def f(x):\n"}, {"signature": "def g():\n"}] * 5)
    dm = CodeDataModule(dataset=str(path), val_fraction=0.2)
    dm.setup()
    assert len(dm.train_contexts) == 8 and len(dm.val_contexts) == 2


def test_context_list_module():
    dm = ContextListDataModule(["a", "b"], contexts_per_step=2, steps_per_epoch=3)
    assert [len(b) for b in dm.train_dataloader()] == [2, 2, 2]
    assert list(dm.val_dataloader()) == [["a", "b"]]
    with pytest.raises(ValueError):
        ContextListDataModule([])
