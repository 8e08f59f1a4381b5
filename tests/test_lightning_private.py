"""The Lightning internals of lit_align.lightning_private still behave as lit_align needs: these
tests fail when a Lightning upgrade changes them (then update that one module)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lit_align import lightning_private


class Counting(L.LightningModule):
    """Manual optimisation with ``updates`` optimizer steps per batch (0: a skipped step)."""

    def __init__(self, updates: int) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.updates, self.batches = updates, 0

    def training_step(self, batch, batch_idx):
        self.batches += 1
        opt = self.optimizers()
        for _ in range(self.updates):
            self.manual_backward((self.w - 1).pow(2).sum())
            opt.step()
            opt.zero_grad()
        if self.updates == 0:
            lightning_private.count_step_without_update(self.trainer)
        else:
            lightning_private.count_updates_as_one(self.trainer, self.updates)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(list(range(100)), batch_size=1)


@pytest.mark.parametrize("updates", [0, 1, 3])
def test_max_steps_counts_training_steps_whatever_the_updates(updates):
    module = Counting(updates)
    trainer = L.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module)
    assert trainer.global_step == 4 and module.batches == 4
    progress = lightning_private.optimizer_step_progress(trainer)
    assert progress.total.completed == 4 and progress.total.ready == 4
    if updates:
        assert module.w.item() != 0.0  # the updates did happen


def test_the_silenced_checkpoint_warning_is_lightnings_text():
    """The filter matches ModelCheckpoint's warning by its first words: a Lightning that rewords it
    fails here instead of printing it again in every run."""
    import inspect

    from lightning.pytorch.callbacks import model_checkpoint

    from lit_align.lightning_private import MANUAL_CHECKPOINT_WARNING

    source = " ".join(inspect.getsource(model_checkpoint).split())
    assert MANUAL_CHECKPOINT_WARNING.replace("every_n_train_steps", "every_n_train_steps, but no") in source
