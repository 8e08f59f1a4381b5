"""What the CLI adds to LightningCLI: the ``export`` and ``sample`` commands, the ``--help`` text
and the callbacks of every ``fit`` (a step-based progress bar, the end-of-run summary)."""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
from typing import Any

from jsonargparse import DefaultHelpFormatter

#: commands beside Lightning's fit/validate/test/predict, each a module with ``main(argv)``
COMMANDS = {
    "export": ("lit_align.export", "write a checkpoint's policy as a Hugging Face folder (save_pretrained)"),
    "sample": ("lit_align.predict", "sample a checkpoint or an exported folder, score the samples, write JSONL"),
}


def run_command(argv: list[str], from_command_line: bool) -> Any:
    """Run ``argv[0]`` of :data:`COMMANDS`. From the command line, a bad input (ValueError,
    missing file, unloadable model) prints one line and exits with status 2."""
    from lit_align.models.loading import ModelLoadError

    module = importlib.import_module(COMMANDS[argv[0]][0])
    if not from_command_line:
        return module.main(argv[1:])
    try:
        return module.main(argv[1:])
    except (ValueError, FileNotFoundError, ModelLoadError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


class HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's formatter that keeps the description's line breaks."""


def description(configs: list[str]) -> str:
    by_family: dict[str, list[str]] = {}
    for name in configs:
        family = name.split("/")[0] if "/" in name else name.split("_")[0].removesuffix(".yaml")
        by_family.setdefault(family, []).append(name)
    listed = "\n".join(textwrap.fill(", ".join(names), 100, initial_indent="  ", subsequent_indent="    ")
                       for _, names in sorted(by_family.items()))
    extra = "\n".join(f"  {name:<9}{text}" for name, (_, text) in COMMANDS.items())
    return (
        "lit_align: align language models with human preferences on PyTorch Lightning (DPG/GDC, f-DPG, CDPG,\n"
        "REINFORCE, RL with KL, PPO, RLOO, pretraining with human feedback, reward models, DPO, PMLE, ...).\n\n"
        "  python -m lit_align fit --config quickstart.yaml        train (a config name or a file)\n"
        "  python -m lit_align fit --config CONFIG --print_config  show every setting\n"
        "  python -m lit_align fit --config CONFIG --ckpt_path last  continue a run\n"
        f"{extra}\n\n"
        "  (python -m lit_align export --help, python -m lit_align sample --help for their options)\n\n"
        f"Shipped configs (--config NAME works from any directory):\n{listed}\n"
    )


def parser_kwargs(configs: list[str]) -> dict[str, Any]:
    return {"prog": "python -m lit_align", "description": description(configs), "formatter_class": HelpFormatter}


class RunExtras:
    """A LightningCLI mixin: every ``fit`` gets :class:`StepProgressBar` (unless the progress bar
    is off or the config brings its own) and :class:`RunSummary`."""

    subcommand: str | None
    config_init: Any

    def instantiate_trainer(self, **kwargs: Any):
        from lightning.pytorch.callbacks import ProgressBar

        from lit_align.callbacks.progress import StepProgressBar
        from lit_align.callbacks.run_summary import RunSummary

        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer = config.get("trainer") or {}
        callbacks = kwargs.pop("callbacks", None) or trainer.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        if self.subcommand in (None, "fit"):
            if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
                callbacks.append(StepProgressBar())
            callbacks.append(RunSummary())
        return super().instantiate_trainer(callbacks=callbacks, **kwargs)  # type: ignore[misc]
