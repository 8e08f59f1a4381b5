"""Checks of the parsed command line that need no model: run before anything is instantiated.

Each raises a :class:`~lit_align.errors.UserError` naming the field and what to do:
the subcommand, ``trainer.max_steps``, an accelerator the machine lacks (and the CPU strategy
snippet to use instead), output folders that cannot be written, ``--ckpt_path``, and a local
model path that cannot hold a model (a folder without weights, a file that is not GGUF).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lit_align.errors import UserError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json", "adapter_model.safetensors")
STEPS = {"test": "test_step", "validate": "validation_step"}


def check_parsed(cfg: Any, subcommand: str | None) -> None:
    """Every check below, on the config of ``subcommand`` (a jsonargparse Namespace)."""
    if subcommand is None:
        return
    check_subcommand(cfg, subcommand)
    trainer = cfg.get("trainer")
    if trainer is not None:
        if subcommand == "fit":
            check_max_steps(trainer.get("max_steps"))
        check_accelerator(trainer.get("accelerator"), trainer.get("strategy"), trainer.get("devices"))
        check_devices(trainer.get("accelerator"), trainer.get("devices"))
        for field, path in output_folders(trainer):
            check_writable(field, path)
    model_args = _init_args(cfg.get("model"))
    if isinstance(model_args.get("model"), str):
        check_model_source(model_args["model"])


def _init_args(node: Any) -> dict:
    if node is None or not hasattr(node, "get"):
        return {}
    args = node.get("init_args", node)
    return dict(args.items()) if hasattr(args, "items") else {}


def _class_of(node: Any):
    import importlib

    path = node.get("class_path") if hasattr(node, "get") else None
    if not path:
        return None
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def check_subcommand(cfg: Any, subcommand: str) -> None:
    """``test`` / ``validate`` need the method to define the step they run."""
    import lightning as L

    step = STEPS.get(subcommand)
    cls = _class_of(cfg.get("model"))
    if step is None or cls is None or getattr(cls, step, None) is not getattr(L.LightningModule, step):
        return
    other = "validate" if subcommand == "test" and getattr(cls, "validation_step") is not getattr(
        L.LightningModule, "validation_step") else None
    instead = (f"use `python -m lit_align {other} --config ... --ckpt_path ...` (it evaluates the policy on the "
               "validation samples)") if other else "evaluate it with `fit` (its validation runs during training)"
    raise UserError(f"`{subcommand}`: {cls.__name__} has no {subcommand} set ({step} is not defined); {instead}")


def check_max_steps(max_steps: Any) -> None:
    if isinstance(max_steps, int) and (max_steps == 0 or max_steps < -1):
        raise UserError(f"trainer.max_steps: {max_steps} trains nothing; give the number of optimizer steps "
                        "(≥ 1), or -1 to stop on max_epochs")


def check_accelerator(accelerator: Any, strategy: Any, devices: Any) -> None:
    """An accelerator that is not on this machine: say so, and for DDP name the CPU snippet."""
    import torch

    name = str(accelerator).lower() if isinstance(accelerator, str) else None
    if name in ("gpu", "cuda") and not torch.cuda.is_available():
        if "ddp" in str(strategy).lower():
            raise UserError(
                f"trainer.accelerator: {accelerator} with strategy {strategy}, but this machine has no GPU "
                "(torch.cuda.is_available() is False); on CPUs use `--config strategies/ddp_cpu.yaml` instead of "
                "strategies/ddp.yaml (DDP over 2 CPU processes), or drop the strategy snippet")
        raise UserError(f"trainer.accelerator: {accelerator}, but this machine has no GPU "
                        "(torch.cuda.is_available() is False); use --trainer.accelerator=cpu (or auto)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("trainer.accelerator: mps, but MPS is not available here; use --trainer.accelerator=cpu")


def check_devices(accelerator: Any, devices: Any) -> None:
    """More devices than the machine has: Lightning would start one process per device (on CPUs,
    however many there are) or fail after the model is built."""
    import torch

    n = int(devices) if isinstance(devices, int) or (isinstance(devices, str) and devices.isdigit()) else None
    name = str(accelerator).lower()
    if n is None or n < 1:
        return
    cores = os.cpu_count() or 1
    if name == "cpu" and n > max(2, 2 * cores):  # a few processes per core are fine (tests of DDP on CPU)
        raise UserError(f"trainer.devices: {n} CPU processes, but this machine has {cores} cores; use at most "
                        f"{max(2, 2 * cores)} (strategies/ddp_cpu.yaml uses 2)")
    if name in ("gpu", "cuda") and torch.cuda.is_available() and n > torch.cuda.device_count():
        raise UserError(f"trainer.devices: {n} GPUs, but this machine has {torch.cuda.device_count()}; use "
                        "--trainer.devices=auto for all of them")


def output_folders(trainer: Any) -> list[tuple[str, str]]:
    """(field, folder) for each place the run writes: default_root_dir, loggers' save_dir,
    callbacks' dirpath."""
    out = []
    if trainer.get("default_root_dir"):
        out.append(("trainer.default_root_dir", str(trainer.get("default_root_dir"))))
    for field in ("logger", "callbacks"):
        nodes = trainer.get(field)
        nodes = nodes if isinstance(nodes, list) else [nodes]
        for i, node in enumerate(nodes):
            args = _init_args(node)
            for key in ("save_dir", "dirpath"):
                if isinstance(args.get(key), (str, os.PathLike)):
                    where = f"trainer.{field}" + (f"[{i}]" if len(nodes) > 1 else "")
                    out.append((f"{where}.init_args.{key}", str(args[key])))
    return out


def check_writable(field: str, folder: str) -> None:
    """The folder exists and is writable, or can be created (its nearest existing parent is a
    writable folder)."""
    path = Path(folder).expanduser()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        what = "is a file" if probe == path else f"is inside {str(probe)!r}, which is a file"
        raise UserError(f"{field}: {folder!r} {what}, not a folder; choose another output folder")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{field}: cannot write to {str(probe)!r} (permission denied); choose a folder you can "
                        "write to")


def check_model_source(name: str) -> None:
    """A local path given as ``model:`` must hold a model: a folder with config.json and weights,
    or a GGUF file (its first bytes are ``GGUF``). Hub names and built-in names pass."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            return  # loading says "has no config.json", with its own advice
        if not any((path / f).is_file() for f in WEIGHT_FILES) and not any(path.glob("*.safetensors")):
            raise UserError(f"model: folder {name!r} has config.json but no weights ({', '.join(WEIGHT_FILES[:2])} "
                            "or sharded *.safetensors); copy the weight files into it, or point model: at the "
                            "complete folder")
    elif path.is_file() and path.suffix.lower() == ".gguf":
        with open(path, "rb") as f:
            head = f.read(24)
        if head[:4] != b"GGUF" or len(head) < 24:
            raise UserError(f"model: {name!r} is not a GGUF file (it does not start with the GGUF header, or is "
                            f"truncated: {path.stat().st_size} bytes); download it again or point model: at "
                            "another file")
