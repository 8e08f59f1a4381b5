"""The catalogue of bad inputs (docs/bad_inputs.md): each case, its error and its message.

A case is one line of ``CASES``: an id (listed in docs/bad_inputs.md), what to run in a fresh
temporary directory, the exception (or warning) expected, and a regular expression its
message must match (for CLI parser errors, the message printed on stderr). ``early`` cases
must fail before any model is loaded (model loading is made to fail the test).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

from lit_align.data import ContextListDataModule, DatasetLoadError, FileContextsDataModule
from lit_align.data.preference_pairs import split_record
from lit_align.data.pretraining import iter_documents
from lit_align.data.validate import DataFileError
from lit_align.models import ModelLoadError
from lit_align.moment_matching import MomentMatchingError
from lit_align.scorers import Regex
from lit_align.errors import UserError
from lit_align.scorers.base import Scorer, ScorerError
from lit_align.targets import Pointwise

DOC = Path(__file__).resolve().parent.parent / "docs" / "bad_inputs.md"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false",
         "--trainer.enable_checkpointing=false"]


@dataclass
class Case:
    id: str
    run: Callable[[Path], object]
    error: type
    match: str
    early: bool = True


# ------------------------------------------------------------------ helpers that build a case's action
def cli(*args: str, config: str = "dpg_toy") -> Callable[[Path], object]:
    """``fit`` on a shipped config (1 step, no logger) with extra arguments; ``{tmp}`` is the case's folder."""
    from lit_align.cli import main

    def run(tmp: Path):
        return main(["fit", "--config", config, "--trainer.max_steps=1", *QUIET,
                     *(a.replace("{tmp}", str(tmp)) for a in args)])

    return run


def write(name: str, content: str | bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    return make


def file_data(name: str, content: str | bytes, **kwargs) -> Callable[[Path], object]:
    """Set up a FileContextsDataModule on a file written with ``content``."""
    def run(tmp: Path):
        path = write(name, content)(tmp) if content is not None else tmp / name
        FileContextsDataModule(dataset=str(path), **kwargs).setup("fit")

    return run


def scorer_returning(fn: Callable[[list[str]], object]) -> Callable[[Path], object]:
    class Bad(Scorer):
        def score(self, texts, contexts=None):
            return fn(texts)

    return lambda tmp: Bad(name="bad")(["a", "b", "c"])


def tiny_sample(prompt: str, **policy_kwargs) -> Callable[[Path], object]:
    def run(tmp: Path):
        from lit_align.models import load
        from lit_align.models.policy import Policy

        model, tok = load("tiny-gpt2")
        return Policy(tok, **policy_kwargs).sample(model, [prompt], 1)

    return run


def tokenizer_without(*tokens: str) -> Callable[[Path], object]:
    """Save tiny-gpt2 with a tokenizer that lacks ``tokens`` (pad/eos), then load the folder."""
    def run(tmp: Path):
        from lit_align.models import load
        from lit_align.models.loading import tiny_model

        model, tok = tiny_model("tiny-gpt2")
        for t in tokens:
            setattr(tok, f"{t}_token", None)
        model.save_pretrained(tmp / "m")
        tok.save_pretrained(tmp / "m")
        return load(str(tmp / "m"))

    return run


def fake_checkpoint(method: str) -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        torch.save({"state_dict": {}, "global_step": 1, "lit_align": {"method": method}}, tmp / "other.ckpt")

    return make


def then(*steps: Callable[[Path], object]) -> Callable[[Path], object]:
    def run(tmp: Path):
        out = None
        for step in steps:
            out = step(tmp)
        return out

    return run


NEVER = ("--model.init_args.target=[{class_path: lit_align.targets.Pointwise, init_args: {scorer: "
         "{class_path: lit_align.scorers.Regex, init_args: {pattern: z, name: contains_z}}}}]")
JSONL = '{"source": "one two"}\n'

CASES = [
    # --- config and command line
    Case("unknown_config", cli(config="no_such_config"), UserError, r"shipped configs: .*dpg_toy\.yaml"),
    Case("unknown_class_path", cli("--model.class_path=lit_align.methods.DGP"), SystemExit,
         r"has no class 'DGP'.*Valid choices: .*\bDPG\b.*\bPPO\b"),
    Case("unknown_module", cli("--model.class_path=lit_align.nomod.X"), SystemExit, r"no module 'lit_align.nomod'"),
    Case("unknown_option", cli("--model.init_args.n_sampels=3"), SystemExit,
         r"no option 'n_sampels'\. Did you mean 'n_samples'\?.*Its options: .*\bminibatch_size\b"),
    Case("unknown_scorer", cli("--model.init_args.target=[{class_path: lit_align.targets.Pointwise, init_args: "
                               "{scorer: {class_path: lit_align.scorers.Regexp}}}]"), SystemExit,
         r"Did you mean 'Regex'\?"),
    Case("wrong_type", cli("--model.init_args.n_samples=abc"), SystemExit, r"n_samples.*Expected a <class 'int'>"),
    Case("malformed_yaml", then(write("bad.yaml", "model: [unclosed\n"), cli("--config={tmp}/bad.yaml")),
         UserError, r"bad\.yaml' is not valid YAML at line 2, column 1"),
    Case("config_not_utf8", then(write("bad.yaml", "# caf\xe9\n".encode("latin-1")), cli("--config={tmp}/bad.yaml")),
         UserError, r"bad\.yaml' is not UTF-8 text"),
    Case("n_samples_zero", cli("--model.init_args.n_samples=0"), ValueError,
         r"n_samples must be an integer ≥ 1, got 0"),
    Case("lr_not_positive", cli("--model.init_args.lr=0"), ValueError, r"lr must be > 0"),
    Case("unknown_optimizer", cli("--model.init_args.optimizer=sgd"), ValueError,
         r"optimizer must be 'adam' or 'adamw'"),
    Case("dpg_top_k", cli("--model.init_args.top_k=5"), ValueError, r"exact ancestral sampling.*allow_warped_sampling"),
    Case("dpg_top_p", cli("--model.init_args.top_p=0.9"), ValueError, r"allow_warped_sampling: true"),
    Case("dpg_empty_target", cli("--model.init_args.target=[]"), ValueError, r"needs at least one potential"),
    Case("rloo_one_sample", lambda tmp: __import__("lit_align.methods", fromlist=["RLOO"]).RLOO(
        reward=[Regex("a")], n_samples=1), ValueError, r"RLOO needs n_samples \(k\) ≥ 2"),
    Case("moment_out_of_range", lambda tmp: __import__("lit_align.moment_matching", fromlist=["x"]).Distributional(
        [Regex("a", name="a")], [1.5]), MomentMatchingError, r"'a'.*1\.5.*not strictly inside the feature's range"),
    Case("invalid_regex", lambda tmp: Regex("(unclosed"), ValueError, r"Regex: invalid pattern '\(unclosed'"),
    # --- checkpoints (refused before the model is loaded)
    Case("ckpt_missing", cli("--ckpt_path={tmp}/nope.ckpt"), FileNotFoundError, r"nope\.ckpt' does not exist.*`last`"),
    Case("ckpt_not_a_checkpoint", then(write("junk.ckpt", b"\x00garbage"), cli("--ckpt_path={tmp}/junk.ckpt")),
         ValueError, r"junk\.ckpt' is not a readable checkpoint"),
    Case("ckpt_other_method", then(fake_checkpoint("PPO"), cli("--ckpt_path={tmp}/other.ckpt")), ValueError,
         r"written by method 'PPO', but the config's model is 'DPG'"),
    # --- models and tokenizers
    Case("model_offline", cli("--model.init_args.model=no-such-org/no-such-model-xyz"), ModelLoadError,
         r"'no-such-org/no-such-model-xyz'.*local folder", early=False),
    Case("model_folder_without_config", then(lambda tmp: (tmp / "m").mkdir(), cli("--model.init_args.model={tmp}/m")),
         ModelLoadError, r"has no config\.json", early=False),
    Case("gguf_missing", cli("--model.init_args.model={tmp}/x.gguf"), ModelLoadError, r"x\.gguf' does not exist",
         early=False),
    Case("toy_std_not_positive", cli("--model.init_args.model=toy:std=0"), ModelLoadError,
         r"'toy:std=0'.*positive number, e\.g\. 'toy:std=0\.1'", early=False),
    Case("tokenizer_without_pad_or_eos", tokenizer_without("pad", "eos"), ModelLoadError,
         r"neither a pad nor an EOS token", early=False),
    Case("chat_template_missing", cli("--model.init_args.model=tiny-gpt2", "--model.init_args.chat_template=true"),
         ValueError, r"tokenizer has no chat template; set chat_template: false", early=False),
    Case("prompt_too_long", tiny_sample("x" * 300, max_new_tokens=8), ValueError,
         r"300 tokens plus max_new_tokens=8 .* context of 256: set max_prompt_length: 248", early=False),
    Case("prompt_truncated", tiny_sample("x" * 300, max_new_tokens=8, max_prompt_length=248), UserWarning,
         r"prompt of 300 tokens truncated to its last 248", early=False),
    Case("temperature_zero", tiny_sample("x", temperature=0.0), ValueError, r"temperature must be > 0", early=False),
    Case("null_integer", cli("--model.init_args.max_new_tokens=null"), ValueError,
         r"max_new_tokens must be an integer ≥ 1, got None"),
    Case("lr_nan", lambda tmp: __import__("lit_align.methods", fromlist=["DPG"]).DPG(
        model="toy", target=[Pointwise(Regex("d"))], lr=math.nan), ValueError, r"lr must be > 0, got nan"),
    # --- data files
    Case("data_file_missing", file_data("missing.jsonl", None), FileNotFoundError, r"missing\.jsonl' does not exist"),
    Case("data_path_is_folder", lambda tmp: FileContextsDataModule(dataset=str(tmp)).setup("fit"), ValueError,
         r"is a folder: give a \.json/\.jsonl/\.csv/\.parquet file"),
    Case("data_unsupported_type", file_data("d.txt", JSONL), ValueError, r"unsupported type '\.txt'"),
    Case("data_malformed_jsonl", file_data("d.jsonl", JSONL + '{"source": "x",}\n'), DataFileError,
         r"d\.jsonl', line 2: malformed JSON"),
    Case("data_line_not_object", file_data("d.jsonl", JSONL + '["source"]\n'), DataFileError,
         r"line 2: expected a JSON object .*got list"),
    Case("data_not_utf8", file_data("d.jsonl", JSONL.encode() + '{"source": "café"}\n'.encode("latin-1")),
         DataFileError, r"d\.jsonl' is not UTF-8 text: line 2.*re-encode it as UTF-8"),
    Case("data_empty_file", file_data("d.jsonl", ""), DataFileError, r"d\.jsonl' has no records"),
    Case("data_csv_header_only", file_data("d.csv", "source,reference\n"), DataFileError,
         r"no records \(only a header\)"),
    Case("data_missing_column", file_data("d.jsonl", '{"text": "a"}\n'), ValueError,
         r"no column 'source' \(it has columns \['text'\]\).*set source_column"),
    Case("data_missing_nested_field", file_data("d.jsonl", '{"t": {"fr": "a"}}\n', source_column="t.en"), ValueError,
         r"column 't' has no field 't\.en'"),
    Case("data_no_usable_rows", file_data("d.jsonl", '{"source": "  "}\n', reference_column=None), ValueError,
         r"no usable training contexts in column 'source'"),
    Case("data_malformed_in_cli", then(write("d.jsonl", JSONL + "{oops\n"), cli(
        "--data=lit_align.data.FileContextsDataModule", "--data.init_args.dataset={tmp}/d.jsonl",
        "--data.init_args.reference_column=null")), DataFileError, r"d\.jsonl', line 2: malformed JSON"),
    Case("corpus_malformed_jsonl", lambda tmp: list(iter_documents(str(write("c.jsonl", '{"text": "a."}\n{"text": }\n')(
        tmp)))), DataFileError, r"c\.jsonl', line 2: malformed JSON"),
    Case("corpus_not_utf8", lambda tmp: list(iter_documents(str(write("c.txt", "a.\n".encode() + "caf\xe9\n".encode(
        "latin-1"))(tmp)))), DataFileError, r"c\.txt' is not UTF-8 text: line 2"),
    Case("data_resource_unknown", lambda tmp: FileContextsDataModule(dataset="resource:no_such").setup("fit"),
         FileNotFoundError, r"no shipped resource 'no_such'; shipped: \[.*summarization_news"),
    Case("data_hub_offline", lambda tmp: FileContextsDataModule(dataset="some-org/some-dataset").setup("fit"),
         DatasetLoadError, r"'some-org/some-dataset' is not a local file and the Hugging Face hub is not reachable"),
    Case("data_empty_context_list", lambda tmp: ContextListDataModule(contexts=[]), ValueError, r"`contexts` is empty"),
    Case("data_prompt_template", lambda tmp: FileContextsDataModule(dataset="x.jsonl", prompt_template="Summarize"),
         ValueError, r"prompt_template must contain '\{source\}'"),
    Case("preference_missing_column", lambda tmp: split_record({"prompt": "p", "chosen": "a"}, "prompt", "chosen",
                                                               "rejected", "pairs.jsonl"), ValueError,
         r"pairs\.jsonl: no column 'rejected' \(it has \['chosen', 'prompt'\]\); set prompt_column"),
    Case("preference_message_not_text", lambda tmp: split_record(
        {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 3}],
         "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x"}]},
        None, "chosen", "rejected", "pairs.jsonl"), ValueError, r"a message's content must be a string, got int"),
    # --- scorers
    Case("scorer_raises", scorer_returning(lambda t: 1 / 0), ScorerError,
         r"scorer 'bad' \(Bad\) raised ZeroDivisionError: division by zero \(on a batch of 3 texts, the first 'a'\)"),
    Case("scorer_nan", scorer_returning(lambda t: [0.0, math.nan, 1.0]), ScorerError,
         r"'bad' \(Bad\) returned 1 non-finite values \(NaN or inf\) for 3 texts, the first nan for text 1: 'b'"),
    Case("scorer_inf", scorer_returning(lambda t: [math.inf, -math.inf, 1.0]), ScorerError, r"returned 2 non-finite"),
    Case("scorer_wrong_shape", scorer_returning(lambda t: [1.0, 2.0]), ScorerError,
         r"'bad' \(Bad\) returned shape \(2,\) for 3 texts; it must return one value per text"),
    Case("scorer_strings", scorer_returning(lambda t: ["x"] * len(t)), ScorerError,
         r"returned list of str \('x', \.\.\.\) for 3 texts; it must return one number per text"),
    Case("scorer_none", scorer_returning(lambda t: None), ScorerError, r"returned NoneType for 3 texts"),
    # --- training that cannot make progress
    Case("target_never_satisfied", cli(NEVER, "--trainer.max_steps=6", "--model.init_args.n_samples=4",
                                       "--model.init_args.max_steps_without_signal=3"), FloatingPointError,
         r"no sample has satisfied the target yet \(Ẑ = 0\) for 3 steps in a row \(max_steps_without_signal=3\)",
         early=False),
    Case("target_not_yet_satisfied", cli(NEVER, "--model.init_args.n_samples=4"), UserWarning,
         r"Ẑ = 0\); skipping the gradient", early=False),
]


def _no_load(*args, **kwargs):
    raise AssertionError("a model was loaded before the bad input was refused")


def test_catalogue_is_large_and_documented():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 25
    doc = DOC.read_text(encoding="utf-8")
    missing = [i for i in ids if f"`{i}`" not in doc]
    assert not missing, f"cases not listed in {DOC.name}: {missing}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, in_tmp, monkeypatch, capsys, single_thread):
    monkeypatch.setattr("sys.argv", ["lit_align"])
    monkeypatch.setattr("lit_align.models.loading.hub_reachable", lambda *a, **k: False)
    from lit_align.methods.stepping import warn_once

    warn_once.__defaults__[0].clear()  # each case sees its warnings, whatever ran before
    if case.early:
        monkeypatch.setattr("lit_align.models.engine.load", _no_load)
    if issubclass(case.error, Warning):
        with pytest.warns(case.error) as record:
            case.run(in_tmp)
        text = "\n".join(str(w.message) for w in record)
    else:
        with pytest.raises(case.error) as info:
            case.run(in_tmp)
        text = f"{info.value}\n{capsys.readouterr().err}"
    assert re.search(case.match, text, re.S), f"{case.id}: {case.match!r} not in:\n{text[-3000:]}"
    if case.error is SystemExit:  # a failing exit status (2 from the parser; a message string exits 1)
        assert info.value.code not in (0, None)


def test_pad_token_defaults_to_eos(in_tmp):
    """A tokenizer without a pad token is accepted: padding uses EOS (pad positions are masked)."""
    model, tok = tokenizer_without("pad")(in_tmp)
    assert tok.pad_token_id == tok.eos_token_id is not None


def test_json_array_and_json_lines_in_a_json_file_both_load(in_tmp):
    from lit_align.data.conditional import load_records

    rows = [{"source": "a b"}, {"source": "c"}]
    (in_tmp / "array.json").write_text(json.dumps(rows))
    (in_tmp / "lines.json").write_text("\n".join(json.dumps(r) for r in rows))
    assert load_records(str(in_tmp / "array.json")) == rows == load_records(str(in_tmp / "lines.json"))


@pytest.mark.parametrize("error_file", ["ckpt", "data"])
def test_command_line_prints_one_paragraph_and_exits_2(error_file, in_tmp, monkeypatch, capsys):
    """From the command line, a bad checkpoint or data file is a message, not a traceback."""
    from lit_align import cli

    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    monkeypatch.setattr("lit_align.models.engine.load", _no_load)
    (in_tmp / "d.jsonl").write_text('{"source": "a"}\n{"source": \n')
    extra = (["--ckpt_path", "nope.ckpt"] if error_file == "ckpt" else
             ["--data=lit_align.data.FileContextsDataModule", "--data.init_args.dataset=d.jsonl",
              "--data.init_args.reference_column=null"])
    monkeypatch.setattr("sys.argv", ["lit_align", "fit", "--config", "dpg_toy", "--trainer.logger=false", *extra])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    expected = "error: CheckpointNotFoundError: --ckpt_path 'nope.ckpt' does not exist" if error_file == "ckpt" \
        else "error: DataFileError: data file 'd.jsonl', line 2: malformed JSON"
    assert expected in err, err[-2000:]
