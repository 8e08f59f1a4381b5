"""last.ckpt on interruptions and user errors, and atomic writes through the CheckpointIO plugin."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_align.callbacks.resume import PARTIAL, AtomicCheckpointIO

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false"]


def test_atomic_io_renames_a_whole_file_and_keeps_the_old_one_on_failure(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)
    assert torch.load(path, weights_only=True) == {"step": 1} and not Path(str(path) + PARTIAL).exists()

    class Dies(AtomicCheckpointIO):
        pass

    dying = Dies()

    def half_written(checkpoint, p, storage_options=None):
        Path(p).write_bytes(b"half")
        raise KeyboardInterrupt  # killed while writing

    dying.inner.save_checkpoint = half_written
    with pytest.raises(KeyboardInterrupt):
        dying.save_checkpoint({"step": 2}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}  # the previous checkpoint, whole


def test_the_cli_installs_atomic_io_in_every_run(in_tmp, monkeypatch, single_thread):
    from lit_align.cli import main

    monkeypatch.setattr("sys.argv", ["lit_align"])
    cli = main(["fit", "--config", "dpg_toy", "--trainer.max_steps=1", "--model.init_args.n_samples=4", *QUIET])
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_a_user_error_before_any_step_saves_nothing(in_tmp, monkeypatch, capsys, single_thread):
    """A scorer failing on its first call: there is no completed step to keep, and an older
    last.ckpt in the folder must not be replaced by an untrained one."""
    from lit_align import cli

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.setattr("sys.argv", ["lit_align"])
    scorer = "{class_path: bad_scorers.Failing, init_args: {mode: raise}}"
    status = cli.command_line(["fit", "--config", "dpg_toy", "--trainer.max_steps=3", *QUIET,
                               "--model.init_args.n_samples=4", f"--model.init_args.target=[{{class_path: "
                               f"lit_align.targets.Pointwise, init_args: {{scorer: {scorer}}}}}]"])
    err = capsys.readouterr().err
    assert status == 2 and "raised ZeroDivisionError" in err and "Saved" not in err
    assert not list(in_tmp.rglob("*.ckpt"))


def test_an_output_folder_that_cannot_be_written_is_refused(tmp_path, monkeypatch):
    """(As root every folder is writable, so the permission is faked.)"""
    from lit_align.cli_checks import check_writable
    from lit_align.errors import UserError

    check_writable("trainer.default_root_dir", str(tmp_path / "new" / "deeper"))  # creatable: fine
    monkeypatch.setattr("os.access", lambda path, mode: False)
    with pytest.raises(UserError, match=r"^trainer\.default_root_dir: cannot write to '.*' \(permission denied\)"):
        check_writable("trainer.default_root_dir", str(tmp_path / "new"))


def test_a_sharded_checkpoint_folder_is_found_by_last(tmp_path):
    from lit_align.callbacks.resume import check_checkpoint, find_last_checkpoint

    (tmp_path / "last.ckpt").mkdir()
    (tmp_path / "last.ckpt" / "shard_0.pt").write_bytes(b"x")
    assert find_last_checkpoint([tmp_path]) == tmp_path / "last.ckpt"
    check_checkpoint(tmp_path / "last.ckpt", "DPG", "toy")  # accepted: the strategy reads it


def test_out_of_memory_is_a_paragraph_with_what_to_do():
    from lit_align.cli_errors import OOM_ADVICE, advice, user_error_of

    err = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert user_error_of(err) is err and OOM_ADVICE in advice(err) and advice(ValueError("x")) == ""
    assert user_error_of(KeyError("a bug")) is None  # bugs keep their traceback


@pytest.mark.parametrize("where", ["train", "val"])
def test_stop_iteration_in_a_step_is_an_error_not_an_endless_run(where, single_thread):
    """Lightning's loops read a StopIteration as the end of the data: raised in a training step (by
    model code, say; scorers already turn errors into ScorerError) the run would start epoch after
    epoch without a step or an error, and in a validation step validation would end silently.
    lit_align's steps re-raise it as an error. max_epochs bounds the run if the guard were missing
    (the test then fails instead of hanging)."""
    import lightning as L

    from lit_align.data.prompts import PromptDataModule
    from lit_align.methods import DPG
    from lit_align.scorers import Regex
    from lit_align.targets import Pointwise

    module = DPG(model="tiny-gpt2", target=[Pointwise(Regex("[a-z]", name="l"))], n_samples=4, minibatch_size=4,
                 max_new_tokens=4)

    def model_code_raises(*_):
        if (module.trainer.training and where == "train") or (module.trainer.validating and where == "val"):
            next(iter([]))  # an exhausted iterator inside the model's forward

    class Hook(L.Callback):
        def on_fit_start(self, trainer, pl_module) -> None:
            pl_module.engine.model.register_forward_pre_hook(model_code_raises)

    trainer = L.Trainer(callbacks=[Hook()], max_steps=2, max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        val_check_interval=1, check_val_every_n_epoch=None, limit_val_batches=1)
    step = "training_step" if where == "train" else "validation_step"
    with pytest.raises(RuntimeError, match=f"DPG.{step} raised StopIteration"):
        trainer.fit(module, PromptDataModule(prompt="x", steps_per_epoch=2))
    assert trainer.global_step == (0 if where == "train" else 1)
