"""A progress bar that counts optimizer steps of ``max_steps`` in a step-based run."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class StepProgressBar(TQDMProgressBar):
    """``Step: 40%|████      | 12/30`` when ``max_steps`` is set (every lit_align config is
    step-based; Lightning's bar shows epochs and batches of a 1000-batch epoch instead); an
    epoch-based run keeps Lightning's bar. The CLI adds it unless ``enable_progress_bar: false``."""

    @staticmethod
    def max_steps(trainer: L.Trainer) -> int | None:
        steps = trainer.max_steps
        return steps if steps is not None and steps > 0 else None

    @property
    def train_description(self) -> str:
        trainer = self._trainer_or_none()
        return "Step" if trainer is not None and self.max_steps(trainer) is not None else super().train_description

    def _trainer_or_none(self) -> L.Trainer | None:
        try:
            return self.trainer
        except TypeError:  # not attached to a trainer yet
            return None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        steps = self.max_steps(trainer)
        if steps is None:
            return super().on_train_epoch_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.reset(total=steps)
        bar.n = trainer.global_step  # a resumed run starts where it stopped
        bar.set_description("Step")
        bar.refresh()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if self.max_steps(trainer) is None:
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        bar = self.train_progress_bar
        bar.n = trainer.global_step
        bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
        bar.refresh()
