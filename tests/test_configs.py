"""Every shipped config parses and trains for two steps (with a tiny model swapped in).

The configs are globbed, so a config added to ``lit_align/configs/`` is covered automatically.
A config whose model is not ``toy`` (``smollm2``, a hub name, a local path) runs with
``tiny-gpt2`` instead; sizes, steps, logging and devices are shrunk to unit-test scale.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import yaml

from lit_align.cli import CONFIG_DIR
from lit_align.methods import PHF, DPG, EngineModule, Reinforce, RewardModel

# strategies/ and samplers/ hold snippets composed with an experiment config (tests/test_ddp.py)
SNIPPET_DIRS = ("strategies", "samplers")
CONFIGS = sorted(p for p in CONFIG_DIR.rglob("*.yaml") if p.relative_to(CONFIG_DIR).parts[0] not in SNIPPET_DIRS)
IDS = [str(p.relative_to(CONFIG_DIR)) for p in CONFIGS]
MAX_NEW_TOKENS = 4


def test_configs_are_found():
    assert "dpg_toy.yaml" in IDS


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _import(class_path: str):
    import importlib

    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_config_parses(path, in_tmp, run_cli, capsys):
    text = path.read_text(encoding="utf-8")
    assert text.lstrip().startswith("#"), "a config states the paper setting it follows in its first comment"
    raw = load_yaml(path)
    for key in ("model", "data", "trainer"):
        assert key in raw, f"{path.name} has no `{key}:` section"
    with pytest.raises(SystemExit) as info:
        run_cli("fit", "--config", str(path), "--print_config")
    assert info.value.code in (0, None)
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert issubclass(_import(resolved["model"]["class_path"]), EngineModule)
    assert issubclass(_import(resolved["data"]["class_path"]), L.LightningDataModule)
    assert resolved["model"]["class_path"] == raw["model"]["class_path"]


def test_synthetic_preferences_keep_their_soft_labels_through_the_cli(in_tmp, run_cli, capsys):
    """The CLI passes every inherited argument explicitly: the synthetic data module's own
    defaults (soft labels on, every validation pair) must survive it."""
    with pytest.raises(SystemExit):
        run_cli("fit", "--config", str(CONFIG_DIR / "dpo_toy.yaml"), "--print_config")
    args = yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]
    assert args["soft_label_column"] == "chosen_probability" and args["max_val_pairs"] is None
    from lit_align.data import SyntheticPreferenceDataModule

    dm = SyntheticPreferenceDataModule(target_model="toy", **{k: v for k, v in args.items() if k != "target_model"})
    assert dm.soft_label_column == "chosen_probability" and dm.max_val_pairs is None and dm.dataset == "synthetic"


def shrink_args(path: Path, raw: dict, tmp: Path) -> tuple[list[str], str]:
    init = raw["model"].get("init_args") or {}
    model = init.get("model", "smollm2")
    trainer = raw.get("trainer") or {}
    args = [
        "fit", "--config", str(path),
        "--trainer.max_steps=2",
        # a DPG target that a random tiny model never satisfies makes no optimizer step (Ẑ = 0),
        # so global_step would not advance: bound the batches too
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.val_check_interval=2",  # validate once, after the second batch
        "--trainer.limit_val_batches=1",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.log_every_n_steps=1",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.num_nodes=1",
        "--trainer.strategy=auto",
        f"--trainer.default_root_dir={tmp}",
        "--model.init_args.n_samples=4",
        "--model.init_args.minibatch_size=2",  # two minibatches: exercises gradient accumulation
        f"--model.init_args.max_new_tokens={MAX_NEW_TOKENS}",
        "--model.init_args.val_samples=4",
    ]
    if "moment_matching_strict" in path.read_text(encoding="utf-8"):
        # a random tiny model never writes the features of a distributional target: λ cannot be
        # fitted, so warn and keep λ = 0 instead of refusing (and fit on few samples)
        args += ["--model.init_args.moment_matching_strict=false", "--model.init_args.moment_matching_samples=64"]
    precision = str(trainer.get("precision", ""))
    if "16" in precision and "bf16" not in precision:  # fp16 AMP needs a GPU
        args.append("--trainer.precision=32-true")
    if model != "toy":
        # encoder-decoder paper models (t5-small, ...) run as tiny-t5, the rest as tiny-gpt2
        model = "tiny-t5" if "t5" in str(model).lower() else "tiny-gpt2"
        args += [f"--model.init_args.model={model}", "--model.init_args.tokenizer=null",
                 "--model.init_args.chat_template=false"]  # the byte tokenizer has no chat template
    args += conditional_data_args(raw)
    args += preference_args(path, raw, tmp)
    args += pretraining_data_args(raw, tmp)
    return args, model


def conditional_data_args(raw: dict) -> list[str]:
    """Conditional-task data (translation, summarization, code): a hub dataset is swapped for the
    task's shipped offline sample, and the context counts are made small."""
    from lit_align.data.conditional import CodeDataModule, ContextsDataModule, FileContextsDataModule, resolve_local

    cls = _import(raw["data"]["class_path"])
    if not issubclass(cls, ContextsDataModule):
        return []
    args = ["--data.init_args.contexts_per_step=2", "--data.init_args.val_contexts_per_step=2",
            "--data.init_args.max_val_contexts=2",
            # byte-level tiny models: an article is thousands of tokens (tiny-gpt2 has 256 positions)
            "--model.init_args.max_prompt_length=96"]
    if issubclass(cls, FileContextsDataModule):
        import inspect

        init = raw["data"].get("init_args") or {}
        dataset = init.get("dataset", inspect.signature(cls.__init__).parameters["dataset"].default)
        if dataset != "stdlib" and resolve_local(dataset) is None:
            args.append(f"--data.init_args.dataset={cls.OFFLINE_DATASET}")
        if issubclass(cls, CodeDataModule):
            args.append("--data.init_args.max_functions=40")
    return args


def preference_args(path: Path, raw: dict, tmp: Path) -> list[str]:
    """Preference data (DPO, PMLE, distillation, reward models): a hub dataset is swapped for the
    shipped TL;DR-style sample, synthetic pairs are few, caches stay in the test's directory, and
    a reward model that a config loads from a training run is a random tiny one."""
    from lit_align.data.preference import PreferenceDataModule
    from lit_align.data.synthetic_preferences import SyntheticPreferenceDataModule

    args = []
    cls = _import(raw["data"]["class_path"])
    if issubclass(cls, PreferenceDataModule):
        args += ["--data.init_args.batch_size=4", "--data.init_args.max_val_pairs=4",
                 "--data.init_args.max_completion_length=32", f"--data.init_args.cache_dir={tmp / 'ref_cache'}",
                 "--model.init_args.max_prompt_length=96"]  # tiny-gpt2 has 256 positions
        if issubclass(cls, SyntheticPreferenceDataModule):
            args += ["--data.init_args.n_pairs=8", "--data.init_args.n_val_pairs=4",
                     f"--data.init_args.output={tmp / 'pairs.jsonl'}"]
        else:
            from lit_align.data.conditional import resolve_local

            dataset = (raw["data"].get("init_args") or {}).get("dataset", "trl-lib/tldr-preference")
            if resolve_local(dataset) is None:
                args.append(f"--data.init_args.dataset={cls.OFFLINE_DATASET}")
    reward = (raw["model"].get("init_args") or {}).get("reward")
    if isinstance(reward, dict) and reward.get("class_path", "").endswith("RewardModelScorer"):
        args.append('--model.init_args.reward={"class_path": "lit_align.scorers.RewardModelScorer", '
                    '"init_args": {"path": "tiny-gpt2", "max_prompt_length": 96}}')
    return args


def pretraining_data_args(raw: dict, tmp: Path) -> list[str]:
    """Scored pretraining corpora (PHF): a hub corpus is swapped for a local one (the standard
    library for code, the shipped prose sample otherwise), chunks are short and few, and the
    score cache stays in the test's directory."""
    from lit_align.data.pretraining import PretrainingDataModule

    cls = _import(raw["data"]["class_path"])
    if not issubclass(cls, PretrainingDataModule):
        return []
    init = raw["data"].get("init_args") or {}
    args = ["--data.init_args.seq_len=32", "--data.init_args.batch_size=4", "--data.init_args.shuffle_buffer=4",
            "--data.init_args.max_documents=12", "--data.init_args.val_every=4", "--data.init_args.max_val_chunks=2",
            f"--data.init_args.cache_dir={tmp / 'phf_scores'}"]
    corpus = init.get("corpus", "stdlib")
    if corpus != "stdlib" and not corpus.startswith("resource:") and not Path(corpus).exists():
        args.append("--data.init_args.corpus=" + ("stdlib" if init.get("segmentation") == "lines"
                                                  else "resource:phf_prose.jsonl"))
        if init.get("scorer") is None:  # the hub corpus's own scores: score the stand-in offline instead,
            # with thresholds on that scorer's scale
            args.append("--data.init_args.scorer=lit_align.scorers.ProfanityCheck")
            if "threshold" in (raw["model"].get("init_args") or {}):
                args.append("--model.init_args.threshold=0.5")
    return args


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_config_trains_two_steps(path, in_tmp, run_cli):
    raw = load_yaml(path)
    args, model_name = shrink_args(path, raw, in_tmp)
    cli = run_cli(*args)
    trainer, module = cli.trainer, cli.model
    assert trainer.state.finished
    assert isinstance(module, _import(raw["model"]["class_path"]))
    assert module.hparams.model == model_name
    assert module.hparams.n_samples == 4 and module.hparams.max_new_tokens == MAX_NEW_TOKENS
    assert trainer.fit_loop.epoch_loop.batch_progress.total.completed == 2, "two training batches ran"
    assert 0 <= trainer.global_step <= 2
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    validated = sum(trainer.num_val_batches or [0]) > 0
    policy_names = ("train/kl_policy_base", "train/length") + (("val/kl_policy_base", "val/length") if validated else ())
    # a reward model, or an offline objective (PHF): no policy samples to measure
    samples_policy = not isinstance(module, (PHF, RewardModel))
    if not samples_policy:
        policy_names = ("train/loss",) + (("val/loss",) if validated else ())
    for name in policy_names:
        assert name in metrics, f"{name} not logged; got {sorted(metrics)}"
        assert math.isfinite(metrics[name])
    if samples_policy:
        assert 1 <= metrics["train/length"] <= MAX_NEW_TOKENS
    if isinstance(module, DPG):
        for name in ("train/z", "train/ess", "train/n_satisfying"):
            assert name in metrics, f"{name} not logged"
        # every drawn sample enters the running Z estimate (4 per context, ≥ 1 context per batch)
        assert module.state.z_count >= 2 * 4 and module.state.z_count % 4 == 0
        if metrics["train/z"] > 0:
            assert "train/tv_target_policy" in metrics
            assert 0 < metrics["train/ess"] <= 1
            assert math.isfinite(metrics["train/kl_target_policy"])
        else:  # no sample satisfied the target (a random tiny model rarely writes "amazing"):
            # Ẑ = 0, the gradient is skipped but the step counts toward max_steps, and the
            # undefined divergences are not logged (never NaN)
            assert module.state.log_z == -math.inf and metrics["train/n_satisfying"] == 0
            assert "train/kl_target_policy" not in metrics
            assert trainer.global_step == 2, "skipped steps still count toward max_steps"
    if isinstance(module, Reinforce):
        assert "train/reward" in metrics and math.isfinite(metrics["train/reward"])
        assert trainer.global_step == 2
    scorers = module.target.scorers() if isinstance(module, DPG) else getattr(module, "rewards", [])
    for s in scorers:
        assert f"train/scorer/{s.name}" in metrics
    # everything the logger wrote stayed inside the test's directory
    log_dir = trainer.logger.log_dir if trainer.logger is not None else None
    if log_dir is not None:
        assert Path(log_dir).resolve().is_relative_to(in_tmp.resolve())
