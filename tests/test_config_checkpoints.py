"""Shipped configs: every one that trains can be resumed (a ``last.ckpt``), and the offline
configs stay light enough to try on a laptop (no beam-search validation, at most one sanity
validation batch, their first comment says what was scaled down)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

CONFIGS = Path(__file__).resolve().parents[1] / "lit_align" / "configs"
OVERLAYS = {"strategies", "samplers"}  # fragments added to another config, not runs of their own
NOT_TRAINING = {"lit_align.methods.Sampler"}  # predict only: nothing to resume


def shipped() -> list[Path]:
    return sorted(p for p in CONFIGS.rglob("*.yaml") if not OVERLAYS & set(p.relative_to(CONFIGS).parts))


def callbacks(config: dict) -> list[dict]:
    return (config.get("trainer") or {}).get("callbacks") or []


@pytest.mark.parametrize("path", shipped(), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_training_config_saves_a_resumable_last_checkpoint(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    if config["model"]["class_path"] in NOT_TRAINING:
        return
    ckpts = [c for c in callbacks(config) if c["class_path"].endswith("Checkpoint")]
    assert ckpts, f"{path.name}: no checkpoint callback, so --ckpt_path last would start from scratch"
    args = ckpts[0].get("init_args") or {}
    # AtomicCheckpoint saves last.ckpt by default; a plain ModelCheckpoint needs save_last: true
    assert args.get("save_last", ckpts[0]["class_path"].endswith("AtomicCheckpoint")) is True, path.name


OFFLINE = sorted(CONFIGS.glob("*_offline.yaml"))


def test_the_offline_configs_are_found() -> None:
    assert len(OFFLINE) >= 7


@pytest.mark.parametrize("path", OFFLINE, ids=lambda p: p.name)
def test_offline_configs_are_light(path: Path) -> None:
    text = path.read_text()
    config = yaml.safe_load(text)
    assert "scaled down" in text.splitlines()[0].lower(), f"{path.name}: the first comment says what was scaled down"
    assert (config["trainer"].get("num_sanity_val_steps", 2)) <= 1, path.name
    for cb in callbacks(config):
        if cb["class_path"].endswith("TaskMetrics"):
            assert "beam" not in cb["init_args"].get("decoding", ["sampling"]), f"{path.name}: beam-search validation"


def test_task_metrics_decode_by_sampling_only_by_default() -> None:
    from lit_align.callbacks.task_metrics import TaskMetrics

    assert TaskMetrics(metrics=["length"]).decoding == ["sampling"]
