"""``python -m lit_align sample``: JSONL rows of a checkpoint or an export folder, their scores equal
the run's scorers on the texts, the summary recomputes from the file; the CLI's run summary and
step-based progress bar."""

from __future__ import annotations

import json
import logging
import math

import lightning as L
import pytest
import torch

from lit_align.scorers import Regex

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.usefixtures("single_thread")]

CONFIG = """
seed_everything: 0
trainer:
  max_steps: 2
  accelerator: cpu
  devices: 1
  limit_val_batches: 0
  logger:
    class_path: lightning.pytorch.loggers.TensorBoardLogger
    init_args: {save_dir: runs, name: tiny}
  callbacks:
    - class_path: lit_align.callbacks.AtomicCheckpoint
      init_args: {every_n_train_steps: 2, save_top_k: 0}
model:
  class_path: lit_align.methods.DPG
  init_args:
    model: tiny-gpt2
    target:
      - class_path: lit_align.targets.Pointwise
        init_args:
          scorer: {class_path: lit_align.scorers.Regex, init_args: {pattern: "[a-z]", name: letter}}
      - class_path: lit_align.moment_matching.Distributional
        init_args:
          scorers: [{class_path: lit_align.scorers.Regex, init_args: {pattern: "[0-9]", name: digit}}]
          moments: [0.5]
    n_samples: 8
    minibatch_size: 8
    max_new_tokens: 6
    val_samples: 4
    lr: 0.05
    moment_matching_samples: 64
    moment_matching_strict: false
data:
  class_path: lit_align.data.PromptDataModule
  init_args: {prompt: "x", steps_per_epoch: 100}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-step CLI run of DPG on tiny-gpt2 (folder, CLI object, the run's log)."""
    from lit_align.cli import main

    folder = tmp_path_factory.mktemp("run")
    (folder / "tiny.yaml").write_text(CONFIG)
    mp = pytest.MonkeyPatch()
    mp.chdir(folder)
    mp.setattr("sys.argv", ["lit_align"])
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger("lightning.pytorch").addHandler(handler)
    # other tests may have raised these loggers' levels: the summary is an INFO record
    names = ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero")
    levels = {name: logging.getLogger(name).level for name in names}
    for name in levels:
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        cli = main(["fit", "--config", "tiny.yaml", "--trainer.enable_model_summary=false"])
    finally:
        logging.getLogger("lightning.pytorch").removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        mp.undo()
    return folder, cli, "\n".join(records)


def read(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def distinct(texts: list[str], n: int) -> float:
    grams = [tuple(w[i:i + n]) for w in (t.split() for t in texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams)


def test_sample_writes_scored_jsonl_and_its_summary(run, run_cli, capsys):
    folder, _, _ = run
    summary = run_cli("sample", "--from", str(folder / "runs" / "tiny"), "--n", "12", "--prompt", "x",
                      "--prompt", "hello", "--out", str(folder / "ckpt.jsonl"), "--seed", "3")
    rows = read(folder / "ckpt.jsonl")
    assert [r["prompt"] for r in rows] == ["x"] * 12 + ["hello"] * 12
    texts = [r["completion"] for r in rows]
    for name, pattern in (("letter", "[a-z]"), ("digit", "[0-9]")):
        expected = Regex(pattern, name=name)(texts, [r["prompt"] for r in rows]).tolist()
        assert [r["scores"][name] for r in rows] == expected
    assert all(1 <= r["n_tokens"] <= 6 for r in rows)
    recomputed = {"n": 24.0, "E[letter]": sum(r["scores"]["letter"] for r in rows) / 24,
                  "E[digit]": sum(r["scores"]["digit"] for r in rows) / 24,
                  "mean_length": sum(r["n_tokens"] for r in rows) / 24,
                  "distinct-1": distinct(texts, 1), "distinct-2": distinct(texts, 2)}
    assert summary.keys() == recomputed.keys()
    assert all(math.isclose(summary[k], v, rel_tol=1e-12) for k, v in recomputed.items()), (summary, recomputed)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("n=24  E[letter]=") and line.endswith("ckpt.jsonl")


def test_export_folder_samples_like_its_checkpoint(run, run_cli):
    """Same seed, same weights and sampling settings: the export folder writes the same rows; the
    run config's prompt is the default prompt."""
    folder, _, _ = run
    out = run_cli("export", "--ckpt_path", str(folder / "runs"), "--out", str(folder / "exported"))
    assert (out / "lit_align_config.yaml").is_file()
    for source, name in ((folder / "runs", "a.jsonl"), (out, "b.jsonl")):
        run_cli("sample", "--from", str(source), "--n", "8", "--out", str(folder / name), "--seed", "5")
    assert read(folder / "a.jsonl") == read(folder / "b.jsonl")
    assert {r["prompt"] for r in read(folder / "a.jsonl")} == {"x"}


def test_sample_refuses_without_prompts(tmp_path, run_cli, gpt2_export):
    with pytest.raises(ValueError, match="no prompts"):
        run_cli("sample", "--from", str(gpt2_export), "--out", str(tmp_path / "s.jsonl"))


@pytest.fixture
def gpt2_export(tmp_path):
    from lit_align.models import load

    model, tok = load("tiny-gpt2")
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def test_run_summary_says_where_everything_is(run):
    folder, cli, log = run
    log_dir = cli.trainer.log_dir
    assert f"logs:       {log_dir}" in log and f"config:     {log_dir}/config.yaml" in log
    assert f"checkpoint: {log_dir}/checkpoints/last.ckpt" in log
    final = cli.trainer.callback_metrics["train/scorer/letter"].item()
    assert f"train/scorer/letter={final:.4g}" in log
    ckpt = torch.load(f"{folder}/{log_dir}/checkpoints/last.ckpt", weights_only=False)
    kept = [s["metrics"] for s in ckpt["callbacks"].values() if "metrics" in s]
    assert kept and kept[0]["train/scorer/letter"] == pytest.approx(final)


def test_step_progress_bar_counts_steps(tmp_path):
    from lit_align.callbacks import StepProgressBar
    from lit_align.data.prompts import PromptDataModule
    from lit_align.methods import DPG
    from lit_align.targets import Pointwise

    bar = StepProgressBar()
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[bar], default_root_dir=tmp_path)
    module = DPG(model="tiny-gpt2", target=[Pointwise(Regex("[a-z]", name="letter"))], n_samples=4,
                 minibatch_size=4, max_new_tokens=3)
    trainer.fit(module, PromptDataModule(prompt="x", steps_per_epoch=100))
    assert (bar.train_progress_bar.n, bar.train_progress_bar.total) == (3, 3)
    assert bar.train_progress_bar.desc.startswith("Step")


def test_help_describes_lit_align_and_lists_configs(run_cli, capsys):
    from lit_align.cli import shipped_configs

    with pytest.raises(SystemExit):
        run_cli("--help")
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m lit_align") and "lit_align: align language models" in text
    assert "export" in text and "sample" in text
    missing = [c for c in shipped_configs() if c not in text]
    assert not missing, missing
