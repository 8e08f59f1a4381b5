"""The command-line catalogue of docs/bad_inputs.md: each bad input's exit status and the first
line of its message, through ``lit_align.cli.command_line`` in-process (what ``python -m
lit_align`` runs), and a real ctrl-C on a real process.

A case: an id (a row of the catalogue), files to write in a fresh folder, the arguments after
``fit --config dpg_toy`` (or a whole command), the exit status and a regular expression the
first ``error:`` line must match. No case may print a traceback.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from lit_align import cli

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "bad_inputs.md"
QUIET = ["--trainer.max_steps=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
         "--trainer.logger=false"]
NO_GPU = not torch.cuda.is_available()


def target(scorer: str) -> str:
    return f"--model.init_args.target=[{{class_path: lit_align.targets.Pointwise, init_args: {{scorer: {scorer}}}}}]"


def failing(mode: str, after: int = 0) -> str:
    return target(f"{{class_path: bad_scorers.Failing, init_args: {{mode: {mode}, fail_after: {after}}}}}")


def ckpt(method: str, model: str = "toy") -> bytes:
    import io

    buf = io.BytesIO()
    torch.save({"state_dict": {}, "global_step": 1, "lit_align": {"method": method},
                "hyper_parameters": {"model": model}}, buf)
    return buf.getvalue()


PREF = ["--data=lit_align.data.PreferenceDataModule", "--data.init_args.max_val_pairs=2",
        "--data.init_args.batch_size=2"]
TINY_CONFIG = b'{"model_type": "gpt2", "n_layer": 1, "n_head": 1, "n_embd": 8, "vocab_size": 10}'


@dataclass
class Case:
    id: str
    args: list[str]
    match: str
    status: int = 2
    files: dict[str, bytes | str] = field(default_factory=dict)
    command: list[str] | None = None  # replaces ``fit --config dpg_toy``
    skip: bool = False
    early: bool = True  # refused before any model is loaded (loading fails the test)
    folders: tuple[str, ...] = ()  # empty folders to make


CASES = [
    # --- values refused by a class's __init__ (not jsonargparse's union dump)
    Case("n_samples_negative", ["--model.init_args.n_samples=-4"], r"^error: n_samples must be an integer ≥ 1, got -4$"),
    Case("lr_zero", ["--model.init_args.lr=0"], r"^error: lr must be > 0, got 0\.0$"),
    Case("max_new_tokens_zero", ["--model.init_args.max_new_tokens=0"], r"^error: max_new_tokens must be an integer ≥ 1"),
    Case("temperature_negative", ["--model.init_args.temperature=-1"], r"^error: temperature must be > 0, got -1\.0"),
    Case("unknown_optimizer_cli", ["--model.init_args.optimizer=sgd"], r"^error: optimizer must be 'adam' or 'adamw'"),
    Case("dpg_top_k_cli", ["--model.init_args.top_k=5"], r"^error: DPG's importance weights .*allow_warped_sampling"),
    # --- values the parser refuses
    Case("n_samples_not_int", ["--model.init_args.n_samples=many"],
         r"^error: model\.init_args\.n_samples \(lit_align\.methods\.DPG\): Expected a <class 'int'>\. Got value: many"),
    Case("lr_not_number", ["--model.init_args.lr=fast"], r"^error: model\.init_args\.lr \(lit_align\.methods\.DPG\): "),
    Case("bool_not_bool", ["--model.init_args.off_policy=maybe"], r"^error: model\.init_args\.off_policy .*maybe"),
    Case("option_typo", ["--model.init_args.n_sampels=3"],
         r"^error: model \(lit_align\.methods\.DPG\): Option 'n_sampels' is not accepted\. Hint: .*Did you mean "
         r"'n_samples'\?"),
    Case("data_option_typo", ["--data.init_args.prompts=p.txt"],
         r"^error: data \(lit_align\.data\.ToyDataModule\): Option 'prompts' is not accepted\. Hint: .*Its options: "),
    Case("method_typo", ["--model.class_path=lit_align.methods.DGP"], r"^error: .*has no class 'DGP'\. Did you mean"),
    Case("scorer_typo", [target("{class_path: lit_align.scorers.Regexp}")], r"^error: .*Did you mean 'Regex'\?"),
    Case("trainer_option_typo", ["--trainer.max_stepz=3"], r"^error: .*max_stepz"),
    Case("precision_unknown", ["--trainer.precision=fp8"],
         r"^error: trainer\.precision: Expected a <class 'int'>, or typing\.Literal\[.*'bf16-mixed'.*\]\. Got value: fp8 "
         r"\(`python -m lit_align fit --help` lists every option\)$"),
    Case("devices_too_many", ["--trainer.devices=4096"], r"^error: trainer\.devices: 4096 CPU processes, but this "
         r"machine has \d+ cores"),
    Case("yaml_wrong_type", ["--config", "over.yaml"], r"^error: model\.init_args\.n_samples \(lit_align\.methods\.DPG\): "
         r"Expected a <class 'int'>", files={"over.yaml": "model:\n  init_args:\n    n_samples: [1, 2]\n"}),
    # --- config files
    Case("no_config", [], r"^error: the following arguments are required: fit\.data, fit\.model\. Hint: give a config "
         r"with --config", command=["fit"]),
    Case("unknown_subcommand", [], r"^error: argument subcommand: invalid choice: 'frobnicate'", command=["frobnicate"]),
    Case("config_missing", [], r"^error: --config 'nope\.yaml' is neither a file nor a shipped config",
         command=["fit", "--config", "nope.yaml"]),
    Case("config_empty", [], r"^error: config 'empty\.yaml' is empty; it needs at least model: and data:",
         files={"empty.yaml": ""}, command=["fit", "--config", "empty.yaml"]),
    Case("config_not_mapping", [], r"^error: config 'list\.yaml' must be a YAML mapping",
         files={"list.yaml": "- a\n- b\n"}, command=["fit", "--config", "list.yaml"]),
    Case("config_bad_yaml", [], r"^error: config 'bad\.yaml' is not valid YAML at line 2, column 1",
         files={"bad.yaml": "model: [unclosed\n"}, command=["fit", "--config", "bad.yaml"]),
    Case("config_not_utf8", [], r"^error: config 'latin\.yaml' is not UTF-8 text \(line 1",
         files={"latin.yaml": "# caf\xe9\n".encode("latin-1")}, command=["fit", "--config", "latin.yaml"]),
    # --- the trainer and the machine
    Case("max_steps_zero", ["--trainer.max_steps=0"], r"^error: trainer\.max_steps: 0 trains nothing"),
    Case("gpu_missing", ["--trainer.accelerator=gpu"], r"^error: trainer\.accelerator: gpu, but this machine has no GPU",
         skip=not NO_GPU),
    Case("ddp_gpu_snippet_on_cpu", ["--config", "strategies/ddp.yaml"],
         r"^error: trainer\.accelerator: gpu with strategy ddp, .* use `--config strategies/ddp_cpu\.yaml`",
         skip=not NO_GPU),
    Case("test_subcommand", [], r"^error: `test`: DPG has no test set .*`python -m lit_align validate",
         command=["test", "--config", "dpg_toy"]),
    Case("output_is_file", ["--trainer.default_root_dir=out"], r"^error: trainer\.default_root_dir: 'out' is a file",
         files={"out": "x"}),
    Case("logger_dir_inside_file", ["--trainer.logger=lightning.pytorch.loggers.CSVLogger",
                                    "--trainer.logger.init_args.save_dir=out/logs"],
         r"^error: trainer\.logger\.init_args\.save_dir: 'out/logs' is inside 'out', which is a file", files={"out": "x"}),
    # --- models
    Case("model_without_weights", ["--model.init_args.model=m"], r"^error: model: folder 'm' has config\.json but no "
         r"weights", files={"m/config.json": TINY_CONFIG}),
    Case("model_gguf_corrupt", ["--model.init_args.model=x.gguf"], r"^error: model: 'x\.gguf' is not a GGUF file",
         files={"x.gguf": b"GGUF\x03"}),
    Case("model_gguf_missing", ["--model.init_args.model=y.gguf"], r"^error: ModelLoadError: GGUF file 'y\.gguf' does "
         r"not exist", early=False),
    Case("model_offline_cli", ["--model.init_args.model=no-such-org/no-such-model-xyz"],
         r"^error: ModelLoadError: could not load model 'no-such-org/no-such-model-xyz'", early=False),
    Case("prompt_too_long_cli", ["--model.init_args.model=tiny-gpt2", "--model.init_args.max_new_tokens=8",
                                 "--model.init_args.n_samples=2", "--data=lit_align.data.FileContextsDataModule",
                                 "--data.init_args.dataset=d.jsonl", "--data.init_args.reference_column=null"],
         r"^error: a prompt of 300 tokens plus max_new_tokens=8 needs 308 positions, more than the model's context of "
         r"256: set max_prompt_length: 248", files={"d.jsonl": '{"source": "%s"}\n' % ("x" * 300)}, early=False),
    # --- data
    Case("data_missing_cli", ["--data=lit_align.data.FileContextsDataModule", "--data.init_args.dataset=d.jsonl"],
         r"^error: FileNotFoundError: data file '.*d\.jsonl' does not exist"),
    Case("data_blank_sources", ["--data=lit_align.data.FileContextsDataModule", "--data.init_args.dataset=d.jsonl",
                                "--data.init_args.reference_column=null"],
         r"^error: dataset '.*d\.jsonl': no usable training contexts in column 'source'",
         files={"d.jsonl": '{"source": " "}\n{"source": ""}\n'}),
    Case("data_bad_line_cli", ["--data=lit_align.data.FileContextsDataModule", "--data.init_args.dataset=d.jsonl",
                               "--data.init_args.reference_column=null"],
         r"^error: DataFileError: data file 'd\.jsonl', line 2: malformed JSON",
         files={"d.jsonl": '{"source": "a"}\n{"source": \n'}),
    Case("preference_missing_column_cli", [*PREF, "--data.init_args.dataset=p.jsonl"],
         r"^error: dataset 'p\.jsonl', record 0: no column 'rejected' \(it has \['chosen', 'prompt'\]\); set "
         r"prompt_column / chosen_column / rejected_column", files={"p.jsonl": '{"prompt": "ab", "chosen": "a"}\n' * 4},
         command=["fit", "--config", "dpo_toy"], early=False),
    Case("preference_not_text_cli", [*PREF, "--data.init_args.dataset=p.jsonl"],
         r"^error: dataset 'p\.jsonl', record 0: chosen/rejected must both be strings or both be message lists; "
         r"got int and str", files={"p.jsonl": '{"prompt": "ab", "chosen": 3, "rejected": "b"}\n' * 4},
         command=["fit", "--config", "dpo_toy"], early=False),
    Case("prompts_blank_cli", ["--data=lit_align.data.PreferencePromptsDataModule", "--data.init_args.dataset=p.jsonl",
                               "--data.init_args.reference_column=null"],
         r"^error: dataset 'p\.jsonl': no usable training contexts in column 'prompt'$",
         files={"p.jsonl": '{"prompt": " "}\n{"prompt": ""}\n'}, command=["fit", "--config", "rkl_toy"]),
    Case("rlkl_kl_coef_negative", ["--model.init_args.kl_coef=-1"], r"^error: RLOO: kl_coef must be a number ≥ 0",
         command=["fit", "--config", "rkl_toy"]),
    # --- checkpoints
    Case("ckpt_missing_cli", ["--ckpt_path=nope.ckpt"], r"^error: CheckpointNotFoundError: --ckpt_path 'nope\.ckpt' "
         r"does not exist"),
    Case("ckpt_last_none", ["--ckpt_path=last"], r"^error: CheckpointNotFoundError: --ckpt_path last: no last\*\.ckpt "
         r"of this experiment .*--ckpt_path auto"),
    Case("ckpt_auto_none", ["--ckpt_path=auto"], r"^$", status=0, early=False),
    Case("ckpt_empty_folder", ["--ckpt_path=ck"], r"^error: CheckpointError: --ckpt_path 'ck' is an empty folder",
         folders=("ck",)),
    Case("ckpt_auto_validate", [], r"^error: CheckpointError: --ckpt_path auto is for fit",
         command=["validate", "--config", "dpg_toy", "--ckpt_path=auto"]),
    Case("seed_not_int", ["--seed_everything=abc"], r"^error: seed_everything: .*abc"),
    Case("callback_typo", ["--trainer.callbacks+=lit_align.callbacks.SampleText"],
         r"^error: .*Did you mean 'SampleTexts'\?"),
    Case("ckpt_garbage", ["--ckpt_path=junk.ckpt"], r"^error: CheckpointError: --ckpt_path 'junk\.ckpt' is not a "
         r"readable checkpoint", files={"junk.ckpt": b"\x00garbage"}),
    Case("ckpt_other_method_cli", ["--ckpt_path=o.ckpt"], r"^error: CheckpointError: --ckpt_path 'o\.ckpt' was "
         r"written by method 'PPO', but the config's model is 'DPG'", files={"o.ckpt": ckpt("PPO")}),
    Case("ckpt_other_model", ["--ckpt_path=o.ckpt"], r"^error: CheckpointError: --ckpt_path 'o\.ckpt' trained model "
         r"'tiny-gpt2', but the config's model is 'toy'; resume with model: tiny-gpt2",
         files={"o.ckpt": ckpt("DPG", "tiny-gpt2")}),
    # --- scorers (the run stops; last.ckpt of the last completed step is saved)
    Case("scorer_raises_cli", [failing("raise", 2), "--trainer.max_steps=2"], r"^error: ScorerError: scorer '\w+' \(Failing\) raised "
         r"ZeroDivisionError: division by zero .*Saved .*last\.ckpt at step \d+", early=False),
    Case("scorer_nan_cli", [failing("nan", 2), "--trainer.max_steps=2"], r"^error: ScorerError: scorer '\w+' \(Failing\) returned 1 "
         r"non-finite values .*the first nan for text 0: '.*'; make it return a finite value", early=False),
    Case("scorer_strings_cli", [failing("strings")], r"^error: ScorerError: scorer '\w+' \(Failing\) returned list "
         r"of str \('yes', \.\.\.\)", early=False),
    Case("scorer_shape_cli", [failing("shape")], r"^error: ScorerError: scorer '\w+' \(Failing\) returned shape "
         r"\(\d+,\) for \d+ texts", early=False),
]


def _no_load(*args, **kwargs):
    raise AssertionError("a model was loaded before the bad input was refused")


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.skipif(c.skip, reason="needs a CPU-only machine"))
                                  for c in CASES], ids=[c.id for c in CASES])
def test_command_line_case(case: Case, in_tmp, monkeypatch, capsys, single_thread):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    monkeypatch.setattr("sys.argv", ["lit_align"])
    monkeypatch.setattr("lit_align.models.loading.hub_reachable", lambda *a, **k: False)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    if case.early:
        monkeypatch.setattr("lit_align.models.engine.load", _no_load)
    for name in case.folders:
        (in_tmp / name).mkdir(parents=True)
    for name, content in case.files.items():
        (in_tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (in_tmp / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    command = case.command or ["fit", "--config", "dpg_toy"]
    status = cli.command_line([*command, *QUIET, *case.args])
    err = capsys.readouterr().err
    first = next((ln for ln in err.splitlines() if ln.startswith("error:")), "")
    assert status == case.status, f"{case.id}: status {status}\n{err[-3000:]}"
    assert re.search(case.match, first), f"{case.id}: {case.match!r} not in {first!r}\n{err[-2000:]}"
    assert "Traceback" not in err
    if case.id.startswith("scorer_raises"):
        saved = re.search(r"Saved (\S+last\.ckpt) at step (\d+)", first)
        assert torch.load(saved.group(1), weights_only=True)["global_step"] == int(saved.group(2)) >= 1


def test_catalogue_lists_every_case():
    doc = DOC.read_text(encoding="utf-8")
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert not [i for i in ids if f"`{i}`" not in doc]


def test_debug_env_shows_the_traceback(in_tmp, monkeypatch):
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    monkeypatch.setattr("sys.argv", ["lit_align"])
    with pytest.raises(ValueError, match="n_samples must be an integer"):
        cli.command_line(["fit", "--config", "dpg_toy", *QUIET, "--model.init_args.n_samples=-4"])


def test_library_use_raises_the_init_error_itself(in_tmp, monkeypatch):
    """``main(args)`` propagates; the error is the class's own, not jsonargparse's union dump."""
    monkeypatch.setattr("sys.argv", ["lit_align"])
    with pytest.raises(ValueError) as info:
        cli.main(["fit", "--config", "dpg_toy", *QUIET, "--model.init_args.n_samples=-4"])
    assert str(info.value) == "n_samples must be an integer ≥ 1, got -4"


def test_ctrl_c_saves_last_ckpt_and_resumes(tmp_path):
    """A real process of a shipped config without a checkpoint callback: ctrl-C saves last.ckpt
    of the last completed step and exits 130; ``--ckpt_path last`` resumes from it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    args = [sys.executable, "-m", "lit_align", "fit", "--config", "dpg_toy", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--model.init_args.n_samples=8", "--trainer.log_every_n_steps=1"]
    proc = subprocess.Popen([*args, "--trainer.max_steps=100000"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = tmp_path / "runs" / "dpg_toy" / "version_0"
    end = time.monotonic() + 120

    def trained_a_step() -> bool:  # a logged train/ scalar (the hparams alone can fill the events file first)
        if not list(events.glob("events.out.*")):
            return False
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        return any(t.startswith("train/") for t in acc.Tags()["scalars"])

    while not trained_a_step():
        assert proc.poll() is None and time.monotonic() < end, proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-3000:]
    last = events / "checkpoints" / "last.ckpt"
    step = torch.load(last, weights_only=True)["global_step"]
    assert step >= 1 and f"at step {step}" in out and "Traceback" not in out
    resumed = subprocess.run([*args, f"--trainer.max_steps={step + 2}", "--ckpt_path", "last"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events.parent / "version_1"), size_guidance={"scalars": 0})
    acc.Reload()
    steps = sorted({e.step for t in acc.Tags()["scalars"] for e in acc.Scalars(t) if t.startswith("train/")})
    assert steps and steps[0] >= step, steps  # it went on from the saved step, not from 0


def test_ctrl_c_before_lightning_handles_sigterm_exits_130(tmp_path):
    """ctrl-C in the setup window (our SIGINT handler installed, Lightning's SIGTERM handler not yet):
    exit 130 like any ctrl-C, not death by the SIGTERM the handler would otherwise raise."""
    import signal as sig

    from lit_align.callbacks.interrupt import InterruptCheckpoint

    cb = InterruptCheckpoint()
    cb._sigint, cb._previous = False, sig.getsignal(sig.SIGINT)
    before = sig.getsignal(sig.SIGTERM)
    sig.signal(sig.SIGTERM, sig.SIG_DFL)
    try:
        with pytest.raises(KeyboardInterrupt):
            cb._on_sigint(sig.SIGINT, None)
    finally:
        sig.signal(sig.SIGTERM, before)


def test_a_real_process_prints_one_paragraph_and_exits_2(tmp_path):
    """``python -m lit_align`` end to end: stderr ends with the paragraph and the debug hint."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop(cli.DEBUG_ENV, None)
    done = subprocess.run([sys.executable, "-m", "lit_align", "fit", "--config", "dpg_toy",
                           "--model.init_args.n_samples=-4"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-2:] == ["error: n_samples must be an integer ≥ 1, got -4",
                                             f"(set {cli.DEBUG_ENV}=1 to see the traceback)"], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
