"""The command line: ``python -m lit_align {fit,validate,test,predict} --config CONFIG``.

A LightningCLI whose models and data modules are given in subclass mode
(``class_path`` / ``init_args``). A ``--config`` value that is not a file in the working
directory is looked up among the configs shipped inside the package, so
``python -m lit_align fit --config cdpg_summarize.yaml`` works from any directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningCLI

from lit_align.callbacks.perf import PerfMonitor
from lit_align.methods.base import BasePolicyModule

CONFIG_DIR = Path(__file__).parent / "configs"


def shipped_configs() -> list[str]:
    return sorted(str(p.relative_to(CONFIG_DIR)) for p in CONFIG_DIR.rglob("*.yaml"))


def resolve_config(value: str) -> str:
    """A path that exists, else the shipped config of that name (with or without ``.yaml``)."""
    if Path(value).exists() or value.lstrip().startswith(("{", "-", "\n")) or "\n" in value:
        return value
    name = value[len("configs/") :] if value.startswith("configs/") else value
    for candidate in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return str(candidate)
    raise SystemExit(
        f"error: config {value!r} is neither a file nor a shipped config. "
        f"Shipped configs: {', '.join(shipped_configs())}"
    )


def resolve_argv(argv: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--config", "-c") and i + 1 < len(argv):
            out += [arg, resolve_config(argv[i + 1])]
            i += 2
            continue
        if arg.startswith("--config="):
            arg = "--config=" + resolve_config(arg.split("=", 1)[1])
        out.append(arg)
        i += 1
    return out


class LitAlignCLI(LightningCLI):
    """LightningCLI with lit_align's defaults (resolved config saved next to the logs)."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults({"trainer.enable_checkpointing": True})


def main(args: list[str] | None = None) -> LitAlignCLI:
    if args is None:  # from the command line: resolve config names in sys.argv itself
        sys.argv[1:] = resolve_argv(sys.argv[1:])
        argv = None
    else:
        argv = resolve_argv(list(args))
    return LitAlignCLI(
        BasePolicyModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=argv,
        auto_configure_optimizers=False,
        trainer_defaults={"callbacks": [PerfMonitor()]},
    )
