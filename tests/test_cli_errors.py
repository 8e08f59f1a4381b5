"""From the command line, known user-facing errors (a model or dataset that cannot be loaded
offline) print one paragraph and exit with status 2; ``LIT_ALIGN_DEBUG=1`` restores the
traceback. Called with an argument list (library use) the exception propagates."""

from __future__ import annotations

import pytest

from lit_align import cli
from lit_align.data import DatasetLoadError
from lit_align.models import ModelLoadError

TOY_BAD_MODEL = ["fit", "--config", "dpg_toy", "--trainer.max_steps=1", "--trainer.logger=false",
                 "--trainer.enable_progress_bar=false", "--model.init_args.model=no-such-org/no-such-model-xyz"]


def run_command_line(monkeypatch, *argv: str) -> None:
    monkeypatch.setattr("sys.argv", ["lit_align", *argv])
    cli.main()


@pytest.fixture
def offline(monkeypatch):
    """The hub is unreachable whatever the machine (no download is ever attempted)."""
    monkeypatch.setattr("lit_align.models.loading.hub_reachable", lambda *a, **k: False)


def test_summarize_config_offline_exits_2_with_one_paragraph(in_tmp, offline, monkeypatch, capsys):
    """The user's command ``fit --config configs/cdpg_summarize.yaml`` with no hub: it names the
    dataset and the offline config, in one paragraph, and prints no traceback."""
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    with pytest.raises(SystemExit) as info:
        run_command_line(monkeypatch, "fit", "--config", "configs/cdpg_summarize.yaml")
    assert info.value.code == 2
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if ln.startswith("error: "))
    assert line.startswith("error: DatasetLoadError: dataset 'cnn_dailymail'")
    assert "cdpg_summarize_offline.yaml" in line and "local" in line
    assert "Traceback" not in err and f"{cli.DEBUG_ENV}=1" in err


def test_model_load_error_exits_2(in_tmp, offline, monkeypatch, capsys):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    with pytest.raises(SystemExit) as info:
        run_command_line(monkeypatch, *TOY_BAD_MODEL)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error: ModelLoadError: could not load model 'no-such-org/no-such-model-xyz'" in err
    assert "Traceback" not in err


def test_debug_env_and_library_use_propagate(in_tmp, offline, monkeypatch):
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(ModelLoadError):
        run_command_line(monkeypatch, *TOY_BAD_MODEL)
    monkeypatch.delenv(cli.DEBUG_ENV)
    monkeypatch.setattr("sys.argv", ["lit_align"])
    with pytest.raises(DatasetLoadError, match="cnn_dailymail"):
        cli.main(["fit", "--config", "cdpg_summarize"])


def test_user_errors_are_the_library_error_classes():
    from lit_align.moment_matching import MomentMatchingError

    errors = cli.user_errors()
    assert {ModelLoadError, DatasetLoadError, MomentMatchingError} <= set(errors)
    assert not any(issubclass(e, (TypeError, KeyError, AttributeError)) for e in errors)  # bugs keep their traceback
