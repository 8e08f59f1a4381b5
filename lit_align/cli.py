"""The command line: ``python -m lit_align {fit,validate,test,predict} --config CONFIG``.

A LightningCLI whose models and data modules are given in subclass mode
(``class_path`` / ``init_args``). A ``--config`` value that is not a file in the working
directory is looked up among the configs shipped inside the package, so
``python -m lit_align fit --config cdpg_summarize.yaml`` works from any directory.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningCLI

from lit_align.callbacks.perf import PerfMonitor
from lit_align.callbacks.resume import SigtermCheckpoint
from lit_align.cli_hints import HintingParser, check_config_file
from lit_align.methods.base import BasePolicyModule
from lit_align.renames import cli_check, cli_check_config_name

CONFIG_DIR = Path(__file__).parent / "configs"


def shipped_configs() -> list[str]:
    return sorted(str(p.relative_to(CONFIG_DIR)) for p in CONFIG_DIR.rglob("*.yaml"))


def resolve_config(value: str) -> str:
    """A path that exists, else the shipped config of that name (with or without ``.yaml``)."""
    if value.lstrip().startswith(("{", "-", "\n")) or "\n" in value:
        return value
    if Path(value).exists():
        if Path(value).is_file():
            check_config_file(value)  # not UTF-8 / not YAML: the file, line and column, before anything else
        return value
    name = value[len("configs/") :] if value.startswith("configs/") else value
    for candidate in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return str(candidate)
    cli_check_config_name(value)  # an old shipped name: the new one
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
    return cli_check(out)  # renamed parameters in the configs or flags: the new names


class LitAlignCLI(LightningCLI):
    """LightningCLI with lit_align's defaults: the resolved config saved next to the logs, a
    checkpoint saved on SIGTERM, and ``fit --ckpt_path last`` resuming the newest ``last.ckpt``
    of the experiment (any logger version)."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults({"trainer.enable_checkpointing": True})

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the hyperparameters of --ckpt_path here, before instantiating anything:
        # refuse a missing, unreadable or other-method checkpoint first, with a message saying so
        from lit_align.callbacks.resume import check_checkpoint

        sub = self.config.get("subcommand")
        value = self.config[sub].get("ckpt_path") if sub else None
        if value and value not in ("last", "best", "hpc") and not str(value).startswith("registry"):
            model = self.config[sub].get("model")
            class_path = model.get("class_path") if hasattr(model, "get") else None
            check_checkpoint(value, class_path.rpartition(".")[2] if class_path else None)
        super()._parse_ckpt_path()

    def before_fit(self) -> None:
        self._resolve_ckpt_path(fit=True)

    def before_validate(self) -> None:
        self._resolve_ckpt_path(fit=False)

    before_test = before_predict = before_validate

    def _resolve_ckpt_path(self, fit: bool) -> None:
        """``--ckpt_path last`` finds the newest last.ckpt of the experiment; a path is checked
        (exists, is a checkpoint of this method) before any model is loaded."""
        from lit_align.callbacks.resume import resolve_ckpt_path

        kwargs = self.config_init[self.subcommand]
        if "ckpt_path" in kwargs:
            kwargs["ckpt_path"] = resolve_ckpt_path(kwargs["ckpt_path"], self.trainer, self.model, fit)


DEBUG_ENV = "LIT_ALIGN_DEBUG"


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe a problem with the user's config or environment (not a bug).

    From the command line they print as one paragraph, without a traceback.
    """
    from lit_align.callbacks.resume import CheckpointError
    from lit_align.callbacks.task_metrics import MissingMetricPackage
    from lit_align.data.conditional import DatasetLoadError
    from lit_align.data.validate import DataFileError
    from lit_align.models.loading import ModelLoadError
    from lit_align.distributed import UnsupportedStrategyError
    from lit_align.moment_matching import MomentMatchingError

    return (ModelLoadError, DatasetLoadError, DataFileError, CheckpointError, MomentMatchingError, MissingMetricPackage,
            UnsupportedStrategyError)


def main(args: list[str] | None = None) -> LitAlignCLI:
    """Run the CLI. ``args=None`` reads the command line: then the errors of
    :func:`user_errors` exit with status 2 and a one-paragraph message (the traceback only
    with ``LIT_ALIGN_DEBUG=1``). With a list of arguments (library use, tests) they propagate."""
    if args is not None:
        return _run(resolve_argv(list(args)))
    sys.argv[1:] = resolve_argv(sys.argv[1:])  # from the command line: resolve config names in sys.argv itself
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        return _run(None)
    try:
        return _run(None)
    except user_errors() as err:
        print(f"error: {type(err).__name__}: {err}\n(set {DEBUG_ENV}=1 to see the traceback)", file=sys.stderr)
        raise SystemExit(2) from None


def _run(argv: list[str] | None) -> LitAlignCLI:
    # Hugging Face models load in eval mode and lit_align turns dropout off itself
    # (models.policy.disable_dropout), so Lightning's "modules in eval mode" warning is noise
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    return LitAlignCLI(
        BasePolicyModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_class=HintingParser,
        save_config_kwargs={"overwrite": True},
        args=argv,
        auto_configure_optimizers=False,
        trainer_defaults={"callbacks": [SigtermCheckpoint(), PerfMonitor()]},
    )
