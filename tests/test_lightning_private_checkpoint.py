"""lit_align.lightning_private's checkpoint part: every private Lightning name it uses still
exists with the meaning relied on (fails on a Lightning upgrade that changes one)."""

from __future__ import annotations

import inspect

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop

from lit_align.lightning_private import CHECKPOINT_PRIVATES, LOOP_PRIVATES, validates_after_this_batch


def test_model_checkpoint_privates_exist():
    cb = ModelCheckpoint(every_n_train_steps=3)
    for name in CHECKPOINT_PRIVATES:
        assert hasattr(cb, name), name
    assert cb._every_n_train_steps == 3 and cb._defer_save_until_validation is False
    assert list(inspect.signature(cb._save_checkpoint).parameters) == ["trainer", "filepath"]
    assert list(inspect.signature(cb._save_topk_checkpoint).parameters) == ["trainer", "monitor_candidates"]
    assert list(inspect.signature(cb._save_last_checkpoint).parameters) == ["trainer", "monitor_candidates"]
    # every write of ModelCheckpoint goes through _save_checkpoint, which DeferredSaveCheckpoint overrides
    for method in (ModelCheckpoint._save_topk_checkpoint, ModelCheckpoint._save_last_checkpoint):
        assert "_save_checkpoint(" in "".join(inspect.getsource(m) for m in ModelCheckpoint.__dict__.values()
                                              if inspect.isfunction(m) and m.__name__.startswith("_save_"))


def test_loop_privates_exist():
    assert "_should_check_val_fx" in dir(_TrainingEpochLoop)
    assert list(inspect.signature(_TrainingEpochLoop._should_check_val_fx).parameters) == ["self", "data_fetcher"]
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    assert LOOP_PRIVATES[0] in vars(trainer.fit_loop)  # set in __init__ (None until fit)
    assert validates_after_this_batch(trainer) is False  # no fetcher outside fit


def test_validates_after_this_batch_follows_val_check_interval(tmp_path):
    """In a real fit with validation every 2 steps, it is True exactly on steps 2, 4, 6."""
    import torch
    from torch.utils.data import DataLoader

    seen = []

    class Model(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, i):
            return (self.w - batch).pow(2).mean()

        def validation_step(self, batch, i):
            pass

        def on_train_batch_end(self, *args):
            seen.append(validates_after_this_batch(self.trainer))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = DataLoader(torch.ones(10, 1), batch_size=1)
    L.Trainer(max_steps=6, val_check_interval=2, limit_val_batches=1, num_sanity_val_steps=0, logger=False,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              default_root_dir=tmp_path).fit(Model(), data, data)
    assert seen == [False, True, False, True, False, True]
