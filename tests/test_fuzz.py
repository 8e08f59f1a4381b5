"""Property-based fuzzing (hypothesis) of the data loaders and the config parser.

Random and malformed inputs either load correctly — and then the result is checked against
what was written — or raise one of the documented errors (docs/bad_inputs.md); nothing else
(no TypeError, KeyError, IndexError, Arrow error, ...). Examples are few and small so that the
module stays fast; hypothesis' database is off (tests leave no files behind).
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lit_align.data import FileContextsDataModule
from lit_align.data.validate import DataFileError, check_data_file

FAST = settings(max_examples=30, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SLOW = settings(FAST, max_examples=8)  # each example goes through `datasets` or the CLI

# JSON values: what a data file might hold in a column
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False),
                    st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=5), inner, max_size=3), max_leaves=6)


def write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------ the file validator
@FAST
@given(data=st.binary(max_size=200), suffix=st.sampled_from([".jsonl", ".json", ".csv"]))
def test_random_bytes_are_records_or_a_data_file_error(tmp_path, data, suffix):
    path = write(tmp_path, "d" + suffix, data)
    try:
        n = check_data_file(path)
    except DataFileError as err:
        assert str(path) in str(err)
        return
    assert n >= 1


@FAST
@given(lines=st.lists(st.one_of(values.map(json.dumps), st.text(max_size=30)), max_size=8))
def test_jsonl_lines_parse_or_name_the_bad_line(tmp_path, lines):
    path = write(tmp_path, "d.jsonl", "\n".join(lines).encode())
    try:
        n = check_data_file(path)
    except DataFileError as err:
        message = str(err)
        if "has no records" in message:
            assert not any(ln.strip(" \t\r\n") for ln in "\n".join(lines).split("\n"))
            return
        line = int(message.split(", line ")[1].split(":")[0])
        bad = "\n".join(lines).split("\n")[line - 1]
        try:
            assert not isinstance(json.loads(bad), dict), "the named line is really bad"
        except json.JSONDecodeError:
            pass
        return
    parsed = [json.loads(ln) for ln in "\n".join(lines).split("\n") if ln.strip(" \t\r\n")]
    assert n == len(parsed) and all(isinstance(r, dict) for r in parsed)


# ------------------------------------------------------------------ the data module, through datasets
sources = st.one_of(st.none(), st.text(alphabet=string.printable + "éß中\u2028", max_size=30))


@SLOW
@given(rows=st.lists(st.fixed_dictionaries({"source": sources}, optional={"extra": values}), max_size=6),
       corrupt=st.sampled_from(["none", "truncate", "latin1", "array"]))
def test_file_contexts_load_exactly_or_raise_documented_errors(tmp_path, rows, corrupt):
    text = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n"
    data = text.encode()
    if corrupt == "truncate" and data:
        data = data[: len(data) // 2]
    elif corrupt == "latin1":
        data = text.encode("latin-1", errors="replace") + "é\n".encode("latin-1")
    elif corrupt == "array":
        data = json.dumps(rows).encode()
    path = write(tmp_path, "d.json" if corrupt == "array" else "d.jsonl", data)
    dm = FileContextsDataModule(dataset=str(path), reference_column=None, val_fraction=0.0, steps_per_epoch=1)
    try:
        dm.setup("fit")
    except DataFileError as err:
        assert str(path) in str(err)
        return
    except ValueError as err:  # documented: empty, or no usable context
        assert "no usable training contexts" in str(err) or "no column 'source'" in str(err), err
        assert not any(r["source"] and r["source"].strip() for r in rows) or corrupt != "none"
        return
    assert corrupt in ("none", "array", "truncate")
    expected = [r["source"].strip() for r in rows if r["source"] is not None and r["source"].strip()]
    if corrupt != "truncate":
        assert [c.source for c in dm.train_contexts] == expected
    batch = next(iter(dm.train_dataloader()))
    assert all(c in dm.train_contexts for c in batch)


# ------------------------------------------------------------------ the config parser
BAD_ARGS = (TypeError, KeyError, AttributeError, IndexError)
OPTIONS = ["n_samples", "minibatch_size", "max_new_tokens", "lr", "temperature", "top_k", "top_p",
           "max_prompt_length", "proposal_update_interval", "max_bad_steps", "divergence", "n_sampels"]
option_values = st.one_of(st.integers(-3, 300), st.floats(allow_nan=True, allow_infinity=True),
                          st.text(alphabet=string.ascii_letters + string.digits + " .-[]{}:,", max_size=12),
                          st.booleans(), st.none())


def instantiate(args: list[str], monkeypatch) -> object:
    """Parse and instantiate the classes of ``fit`` (no training, no model loading)."""
    from lit_align.cli import LitAlignCLI, main

    monkeypatch.setattr(LitAlignCLI, "_run_subcommand", lambda self, sub: None)
    monkeypatch.setattr("sys.argv", ["lit_align"])
    return main(["fit", *args, "--trainer.logger=false"])


def expect_clean_outcome(run) -> object | None:
    """The CLI either instantiates, or refuses with SystemExit (exit status ≠ 0) / ValueError
    naming the problem; an exception of another kind is a bug."""
    try:
        return run()
    except SystemExit as err:
        assert err.code not in (0, None)
    except ValueError as err:
        assert str(err).strip()
    return None


@SLOW
@given(option=st.sampled_from(OPTIONS), value=option_values)
def test_random_option_values_instantiate_or_are_refused(in_tmp, monkeypatch, capsys, option, value):
    rendered = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    cli = expect_clean_outcome(lambda: instantiate(
        ["--config", "dpg_toy", f"--model.init_args.{option}={rendered}"], monkeypatch))
    err = capsys.readouterr().err
    if cli is None:
        return
    # accepted: the module holds the (valid) value
    assert option != "n_sampels", err
    got = cli.model.hparams[option]
    if option in ("n_samples", "minibatch_size", "max_new_tokens", "max_bad_steps"):
        assert isinstance(got, int) and got >= 1


config_docs = st.one_of(
    st.text(max_size=60),
    st.dictionaries(st.sampled_from(["model", "data", "trainer", "seed_everything", "ckpt_path", "junk"]),
                    values, max_size=4).map(yaml.safe_dump),
)


@SLOW
@given(doc=config_docs)
def test_random_config_files_parse_or_are_refused(in_tmp, monkeypatch, capsys, doc):
    path = in_tmp / "random.yaml"
    path.write_text(doc, encoding="utf-8")
    try:
        cli = expect_clean_outcome(lambda: instantiate(["--config", "dpg_toy", "--config", str(path)], monkeypatch))
    except BAD_ARGS as err:  # pragma: no cover - the failure message
        pytest.fail(f"config {doc!r} crashed the parser: {type(err).__name__}: {err}")
    capsys.readouterr()
    if cli is not None:  # accepted: what was built is a method with valid settings
        from lit_align.methods import EngineModule

        assert isinstance(cli.model, EngineModule)
        assert cli.model.hparams.n_samples >= 1 and cli.model.hparams.max_new_tokens >= 1


# ------------------------------------------------------------------ resumable loaders
@FAST
@given(n=st.integers(1, 40), batch=st.integers(1, 7), epoch=st.integers(0, 3), seed=st.integers(0, 2**31),
       replacement=st.booleans(), consumed_share=st.floats(0, 1))
def test_resumable_loader_continues_where_it_stopped(n, batch, epoch, seed, replacement, consumed_share):
    """Any loader state restored into a fresh loader yields exactly the rest of the epoch."""
    from lit_align.data.resumable import resumable_loader

    def make():
        loader = resumable_loader(list(range(n)), batch, shuffle=True, replacement=replacement,
                                  num_samples=2 * n if replacement else None, seed=seed)
        loader.sampler.set_epoch(epoch)
        return loader

    full = [b.tolist() for b in make()]
    k = int(consumed_share * len(full))
    first = make()
    it = iter(first)
    seen = [next(it).tolist() for _ in range(k)]
    state = first.state_dict()
    assert state == {"batches": k} and seen == full[:k]
    resumed = make()
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == full[k:]
    assert resumed.state_dict() == {"batches": len(full)}
    if not replacement:
        assert sorted(i for b in full for i in b) == list(range(n)), "a permutation of the data"


# ------------------------------------------------------------------ preference records (any TRL format)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]),
                                           "content": st.one_of(st.text(max_size=8), scalars)}), max_size=3)
fields = st.one_of(st.text(max_size=12), messages, values)


@FAST
@given(prompt=st.one_of(st.none(), fields), chosen=fields, rejected=fields)
def test_preference_records_split_or_are_refused(prompt, chosen, rejected):
    from lit_align.data.preference_pairs import split_record

    record = {"chosen": chosen, "rejected": rejected, **({} if prompt is None else {"prompt": prompt})}
    where = "pairs.jsonl record 7"
    try:
        p, c, r = split_record(record, None if prompt is None else "prompt", "chosen", "rejected", where)
    except ValueError as err:
        assert where in str(err)
        return
    assert isinstance(c, str) and isinstance(r, str)
    if isinstance(chosen, str) and isinstance(rejected, str):
        if prompt is None:  # implicit prompt: the longest common prefix
            assert p + c == chosen and p + r == rejected
        else:
            assert (p, c, r) == (prompt, chosen, rejected)


@FAST
@given(lines=st.lists(st.one_of(values.map(json.dumps), st.text(max_size=30)), max_size=8))
def test_streamed_jsonl_agrees_with_the_whole_file_reader(tmp_path, lines):
    """The pretraining corpus streams a .jsonl; it accepts and refuses exactly what the reader does."""
    from lit_align.data.validate import iter_jsonl, read_jsonl

    path = write(tmp_path, "c.jsonl", "\n".join(lines).encode())
    outcomes = []
    for reader in (read_jsonl, lambda p: list(iter_jsonl(p))):
        try:
            outcomes.append(("ok", reader(path)))
        except DataFileError as err:
            outcomes.append(("error", str(err)))
    assert outcomes[0] == outcomes[1]
