"""The command line, in-process: logs and metric names, saved config, config lookup, errors, resuming."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_align.cli import CONFIG_DIR, resolve_config, shipped_configs
from lit_align.models import ModelLoadError

SAMPLES_TABLE = "samples"
REQUIRED_TRAIN_METRICS = [
    "train/kl_target_policy",
    "train/kl_policy_base",
    "train/tv_target_policy",
    "train/z",
    "train/ess",
    "train/scorer/contains_d",
]


def toy_fit(steps: int, name: str, *extra: str) -> list[str]:
    """``fit`` on the shipped toy config, small enough for a unit test; logs under ./runs/<name>."""
    return [
        "fit", "--config", "dpg_toy",
        f"--trainer.max_steps={steps}",
        "--trainer.log_every_n_steps=1",
        "--trainer.logger.init_args.save_dir=runs",
        f"--trainer.logger.init_args.name={name}",
        "--model.init_args.n_samples=16",
        "--model.init_args.minibatch_size=8",
        "--model.init_args.val_samples=8",
        *extra,
    ]


def event_accumulator(log_dir: str):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(log_dir, size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


# ----------------------------------------------------------------- logs
def test_fit_logs_metrics_samples_and_config(in_tmp, run_cli):
    sample_cb = "[{class_path: lit_align.callbacks.SampleTexts, init_args: {every_n_steps: 1, n: 4}}]"
    cli = run_cli(*toy_fit(2, "logs", f"--trainer.callbacks={sample_cb}"))
    assert cli.trainer.global_step == 2
    log_dir = Path(cli.trainer.logger.log_dir)
    assert log_dir.resolve().is_relative_to(in_tmp.resolve())
    assert list(log_dir.glob("events.out.tfevents.*"))

    acc = event_accumulator(str(log_dir))
    scalars = set(acc.Tags()["scalars"])
    missing = [m for m in REQUIRED_TRAIN_METRICS if m not in scalars]
    assert not missing, f"metrics missing from TensorBoard: {missing}"
    values = {m: [e.value for e in acc.Scalars(m)] for m in REQUIRED_TRAIN_METRICS}
    assert all(len(v) == 2 for v in values.values()), "log_every_n_steps=1: one value per step"
    assert all(math.isfinite(x) for v in values.values() for x in v)
    assert all(0 < x <= 1 for x in values["train/ess"])
    assert all(0 <= x <= 1 for x in values["train/tv_target_policy"])
    assert all(x > 0 for x in values["train/z"])
    # step 1: the policy is still the base LM and the proposal (all copies of one model), so the
    # importance-weighted KL(π‖a) is exactly 0 and E_π[b] is a plain sample mean in [0, 1]
    assert values["train/kl_policy_base"][0] == 0.0
    assert 0 <= values["train/scorer/contains_d"][0] <= 1

    text_tags = [t for t in acc.Tags()["tensors"] if t.split("/")[0] == SAMPLES_TABLE]
    assert text_tags, f"no '{SAMPLES_TABLE}' text summary in {acc.Tags()['tensors']}"
    events = acc.Tensors(text_tags[0])
    assert len(events) == 2
    table = events[-1].tensor_proto.string_val[0].decode()
    assert re.search(r"^\| # \| contains_d \| sample \|$", table, flags=re.M), table  # one shared context: no column
    rows = re.findall(r"^\| (\d+) \| ([01]) \| ([^|]*) \|$", table, flags=re.M)
    assert [int(i) for i, _, _ in rows] == [0, 1, 2, 3]
    assert all(re.fullmatch(r"[abcd]{4}", s.strip()) for _, _, s in rows), table
    assert all(b == str(int("d" in s)) for _, b, s in rows), table  # each sample's own score beside it

    config = yaml.safe_load((log_dir / "config.yaml").read_text())
    assert config["model"]["class_path"] == "lit_align.methods.DPG"
    assert config["model"]["init_args"]["n_samples"] == 16
    assert config["model"]["init_args"]["model"] == "toy"
    assert config["trainer"]["max_steps"] == 2
    assert config["model"]["init_args"]["target"][0]["init_args"]["scorer"]["init_args"]["name"] == "contains_d"


# ----------------------------------------------------------------- config handling
def test_print_config_round_trips(in_tmp, run_cli, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", "dpg_toy", "--model.init_args.n_samples=7", "--trainer.max_steps=3", "--print_config")
    assert exit_info.value.code in (0, None)
    first = capsys.readouterr().out
    parsed = yaml.safe_load(first)
    assert parsed["model"]["init_args"]["n_samples"] == 7 and parsed["trainer"]["max_steps"] == 3
    (in_tmp / "printed.yaml").write_text(first)
    with pytest.raises(SystemExit):
        run_cli("fit", "--config", "printed.yaml", "--print_config")
    assert capsys.readouterr().out == first


@pytest.mark.parametrize("value", ["dpg_toy", "dpg_toy.yaml", "configs/dpg_toy.yaml"])
def test_bare_config_name_resolves_from_any_directory(value, in_tmp, run_cli, capsys):
    assert not (in_tmp / "dpg_toy.yaml").exists()
    assert Path(resolve_config(value)) == CONFIG_DIR / "dpg_toy.yaml"
    with pytest.raises(SystemExit):
        run_cli("fit", f"--config={value}", "--print_config")
    assert yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["model"] == "toy"


def test_local_file_shadows_shipped_config(in_tmp):
    (in_tmp / "dpg_toy.yaml").write_text("seed_everything: 1\n")
    assert resolve_config("dpg_toy.yaml") == "dpg_toy.yaml"


def test_unknown_config_lists_shipped_configs(in_tmp, run_cli):
    from lit_align.errors import UserError

    with pytest.raises(UserError) as info:
        run_cli("fit", "--config", "no_such_config", "--print_config")
    message = str(info.value)
    assert "no_such_config" in message
    shipped = shipped_configs()
    assert "dpg_toy.yaml" in shipped
    for name in shipped:
        assert name in message


# ----------------------------------------------------------------- model errors
def test_unknown_model_offline_is_a_model_load_error(in_tmp, run_cli):
    with pytest.raises(ModelLoadError, match="local") as info:
        run_cli(*toy_fit(1, "bad", "--model.init_args.model=no-such-org/no-such-model-xyz"))
    assert "no-such-org/no-such-model-xyz" in str(info.value)


def test_local_folder_without_config_json(in_tmp):
    from lit_align.models import load

    (in_tmp / "not_a_model").mkdir()
    with pytest.raises(ModelLoadError, match="config.json"):
        load(str(in_tmp / "not_a_model"))


# ----------------------------------------------------------------- resuming
def test_resume_continues_exactly(in_tmp, run_cli):
    """Fit 2N steps, vs fit N then resume from the checkpoint to 2N: same weights, same DPG state."""
    n = 2
    common = [f"--trainer.val_check_interval={n}", "--model.init_args.proposal_update_interval=2"]
    full = run_cli(*toy_fit(2 * n, "full", *common))
    half = run_cli(*toy_fit(n, "half", *common))
    assert half.trainer.global_step == n
    assert half.model.state.z_count == n * 16
    ckpts = sorted((Path(half.trainer.logger.log_dir) / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    assert ckpts, "no checkpoint written"
    last = ckpts[-1]
    saved = torch.load(last, map_location="cpu", weights_only=True)  # also what LightningCLI does on --ckpt_path
    assert saved["global_step"] == n
    assert saved["lit_align"]["state"]["z_count"] == half.model.state.z_count
    assert saved["lit_align"]["state"]["log_z_sum"] == half.model.state.log_z_sum

    resumed = run_cli(*toy_fit(2 * n, "resumed", *common), "--ckpt_path", str(last))
    assert resumed.trainer.global_step == 2 * n
    # the resumed run starts at the saved step (its own logs hold steps n..2n-1 only)
    acc = event_accumulator(resumed.trainer.logger.log_dir)
    assert [e.step for e in acc.Scalars("train/z")] == list(range(n, 2 * n))
    # DPG's running Z: every sample of the first N steps still counts
    assert resumed.model.state.z_count == full.model.state.z_count == 2 * n * 16
    assert resumed.model.state.log_z_sum == pytest.approx(full.model.state.log_z_sum, abs=1e-9)
    assert resumed.model.state.proposal_updates == full.model.state.proposal_updates
    # identical weights: policy and proposal (optimizer, RNG and proposal state all restored)
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert not torch.equal(full.model.model.table, half.model.model.table), "training moved the weights"


@pytest.mark.parametrize("stop", [4, 5], ids=["final-step-validated", "final-step-not-validated"])
def test_last_checkpoint_holds_the_final_step_and_resumes_exactly(in_tmp, run_cli, stop):
    """AtomicCheckpoint every 3 steps, validation every 2: a run of 4 (or 5) steps leaves its final
    step in last.ckpt (Lightning's own would keep step 3), and a run resumed from it to 8 steps logs
    steps stop..7 and ends with the weights and DPG state of an uninterrupted 8-step run."""
    ckpt = ["--trainer.val_check_interval=2", "--model.init_args.proposal_update_interval=2",
            "--trainer.callbacks+=lit_align.callbacks.AtomicCheckpoint",
            "--trainer.callbacks.every_n_train_steps=3", "--trainer.callbacks.save_top_k=0"]
    full = run_cli(*toy_fit(8, "full", *ckpt))
    half = run_cli(*toy_fit(stop, "half", *ckpt))
    last = Path(half.trainer.logger.log_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == stop
    resumed = run_cli(*toy_fit(8, "resumed", *ckpt), "--ckpt_path", str(last))
    acc = event_accumulator(resumed.trainer.logger.log_dir)
    assert [e.step for e in acc.Scalars("train/z")] == list(range(stop, 8))
    assert [e.step for e in acc.Scalars("val/kl_target_policy")] == [s for s in (5, 7) if s >= stop]
    assert resumed.model.state.z_count == full.model.state.z_count == 8 * 16
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_enable_checkpointing_false_leaves_out_the_configs_checkpoint_callback(in_tmp, run_cli):
    """dpg_toy.yaml has an AtomicCheckpoint: with --trainer.enable_checkpointing=false the run trains
    (Lightning alone refuses the combination) and writes no checkpoint."""
    result = run_cli(*toy_fit(2, "nockpt", "--trainer.enable_checkpointing=false"))
    assert result.trainer.global_step == 2
    assert not any(isinstance(c, ModelCheckpoint) for c in result.trainer.callbacks)
    assert not list(Path("runs").rglob("*.ckpt"))
