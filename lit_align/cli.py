"""The command line: ``python -m lit_align {fit,validate,test,predict} --config CONFIG``.

Every error the user can cause (a config value, a file, a scorer, the machine) ends the
command with one paragraph on stderr and exit status 2 (:func:`command_line`); ctrl-C and
SIGTERM save ``last.ckpt`` first (:class:`~lit_align.callbacks.interrupt.InterruptCheckpoint`).

A LightningCLI whose models and data modules are given in subclass mode
(``class_path`` / ``init_args``). A ``--config`` value that is not a file in the working
directory is looked up among the configs shipped inside the package, so
``python -m lit_align fit --config cdpg_summarize.yaml`` works from any directory.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningCLI

from lit_align.callbacks.interrupt import InterruptCheckpoint
from lit_align.callbacks.perf import PerfMonitor
from lit_align.cli_checks import check_parsed
from lit_align.cli_errors import advice, user_error_of
from lit_align.cli_hints import HintingParser, check_config_file
from lit_align.errors import DEBUG_ENV, EXIT_STATUS  # noqa: F401 (cli.DEBUG_ENV)
from lit_align.errors import UserError, debug_enabled, debug_hint, paragraph
from lit_align.methods.engine_module import EngineModule
from lit_align.cli_extras import COMMANDS, RunExtras, parser_kwargs, run_command
from lit_align.renames import check_arguments, check_config_name

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
    check_config_name(value)  # an old shipped name: a UserError naming the new one
    raise UserError(f"--config {value!r} is neither a file nor a shipped config; give a path, or one of the "
                    f"shipped configs: {', '.join(shipped_configs())}")


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
    check_arguments(out)  # renamed parameters in the configs or flags: a UserError naming the new ones
    return out


def drop_checkpoint_callbacks(cfg) -> None:
    """``--trainer.enable_checkpointing=false`` on a config whose callbacks save checkpoints means
    no checkpoints: those callbacks are left out (Lightning would refuse the combination)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lit_align.cli_checks import _class_of

    trainer = cfg.get("trainer")
    if trainer is None or trainer.get("enable_checkpointing") is not False or not trainer.get("callbacks"):
        return
    saving = [isinstance(cls := _class_of(c), type) and issubclass(cls, ModelCheckpoint) for c in trainer["callbacks"]]
    dropped = [c.get("class_path") for c, s in zip(trainer["callbacks"], saving) if s]
    if dropped:
        trainer["callbacks"] = [c for c, s in zip(trainer["callbacks"], saving) if not s]
        print(f"enable_checkpointing=false: left out {', '.join(dropped)} (no checkpoint is written)", file=sys.stderr)


class LitAlignCLI(RunExtras, LightningCLI):
    """LightningCLI with lit_align's defaults: the resolved config saved next to the logs,
    ``last.ckpt`` saved on ctrl-C, SIGTERM and a user error during training, the parsed config
    checked before anything is instantiated, and ``fit --ckpt_path last`` resuming the newest
    ``last.ckpt`` of the experiment (any logger version)."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults({"trainer.enable_checkpointing": True})

    def parse_arguments(self, parser, args) -> None:
        # LightningCLI reads the hyperparameters of --ckpt_path right after parsing: a missing,
        # unreadable or other-method checkpoint is refused here first, with every other check
        # that needs no model
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")
        if sub is None:
            return
        check_parsed(self.config[sub], sub)
        check_ckpt_arg(self.config[sub])
        drop_checkpoint_callbacks(self.config[sub])

    def instantiate_classes(self) -> None:
        """A ValueError raised in a class's ``__init__`` comes out as itself, not inside
        jsonargparse's union dump."""
        try:
            super().instantiate_classes()
        except Exception as err:
            user = user_error_of(err)
            if user is None or user is err:
                raise
            raise user from None

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


def check_ckpt_arg(cfg) -> None:
    """A ``--ckpt_path`` file: readable, of the config's method and model (see check_checkpoint)."""
    from lit_align.callbacks.resume import SPECIAL_CKPT, check_checkpoint

    value = cfg.get("ckpt_path")
    if not value or value in SPECIAL_CKPT or str(value).startswith("registry"):
        return
    model = cfg.get("model")
    class_path = model.get("class_path") if hasattr(model, "get") else None
    init = model.get("init_args") if hasattr(model, "get") else None
    name = init.get("model") if hasattr(init, "get") else None
    check_checkpoint(value, class_path.rpartition(".")[2] if class_path else None, name)


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe a problem with the user's config or environment (not a bug)."""
    from lit_align.cli_errors import user_kinds

    return user_kinds()


def main(args: list[str] | None = None) -> LitAlignCLI:
    """Run the CLI. ``args=None`` reads the command line and exits with :func:`command_line`'s
    status. With a list of arguments (library use, tests) errors propagate, jsonargparse's
    union dump unwrapped."""
    if args is not None:
        return _run(resolve_argv(list(args)))
    raise SystemExit(command_line(sys.argv[1:]))


def command_line(argv: list[str]) -> int:
    """Run the command ``argv``; the exit status. A user error prints one paragraph (and the
    traceback only with ``LIT_ALIGN_DEBUG=1``) and gives 2; ctrl-C after saving gives 130."""
    from lit_align.callbacks.interrupt import forget_interrupts, interrupted_by

    forget_interrupts()  # an earlier command of this process (tests, notebooks) says nothing about this one
    try:
        sys.argv[1:] = resolve_argv(list(argv))  # in sys.argv: DDP's launcher re-runs it in every rank
        _run(None)
    except SystemExit as err:  # the parser's own exits (already printed), --help, SIGTERM
        if interrupted_by() == "SIGINT":
            return 130
        return err.code if isinstance(err.code, int) else (0 if err.code is None else _print(str(err.code)))
    except KeyboardInterrupt:  # before training started, or a second ctrl-C: nothing to save
        if debug_enabled():
            raise
        print("interrupted (ctrl-C); nothing was saved by this run", file=sys.stderr)
        return 130
    except BaseException as err:
        user = user_error_of(err)
        if user is None or debug_enabled():
            raise
        print(f"{paragraph(user)}{advice(user)}\n{debug_hint()}", file=sys.stderr)
        return EXIT_STATUS
    return 0


def _print(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def _run(argv: list[str] | None) -> Any:
    command = list(argv) if argv is not None else sys.argv[1:]
    if command and command[0] in COMMANDS:  # export, sample: lit_align.cli_extras
        return run_command(command, from_command_line=argv is None)
    # Hugging Face models load in eval mode and lit_align turns dropout off itself
    # (models.policy.disable_dropout), so Lightning's "modules in eval mode" warning is noise
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    return LitAlignCLI(
        EngineModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_class=HintingParser,
        parser_kwargs=parser_kwargs(shipped_configs()),
        save_config_kwargs={"overwrite": True},
        args=argv,
        auto_configure_optimizers=False,
        trainer_defaults={"callbacks": [InterruptCheckpoint(), PerfMonitor()]},
    )
