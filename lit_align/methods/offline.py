"""OfflineModule: the base of the methods that train on a dataset rather than on their own
samples (PHF, the reward model, DPO / preference MLE / preference distillation).

The method builds its models, then connects its data module to them (litgpt's
``connect`` pattern): the data module receives a tokenizer (or a
:class:`~lit_align.models.Policy`) and never reads the method. Anything computed from the
data with a model (DPO's reference log-probs) is computed here, by the method.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from lit_align.methods.base import BasePolicyModule


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s weights are (HF models and LoRA adapter views say it themselves)."""
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else next(model.parameters()).device


def attached_trainer(module: L.LightningModule) -> L.Trainer | None:
    """The Trainer ``module`` is attached to, or None."""
    try:
        return module.trainer
    except RuntimeError:  # not attached to a Trainer
        return None


def attached_datamodule(module: L.LightningModule) -> L.LightningDataModule | None:
    """The data module of the Trainer ``module`` is attached to (None outside a Trainer)."""
    return getattr(attached_trainer(module), "datamodule", None)


class OfflineModule(BasePolicyModule):
    """Models first, then the data: :meth:`connect_data` runs once the models exist, inside
    ``configure_model`` (Lightning's model-building hook, after ``setup``), so before a
    checkpoint is restored: whatever it computes with π0 sees the untrained weights."""

    def configure_model(self) -> None:
        if self.model is None:
            self.build_models()
        datamodule = attached_datamodule(self)
        if datamodule is not None and hasattr(datamodule, "connect"):
            self.connect_data(datamodule)

    def build_models(self) -> None:
        """Load the trained model (and the frozen ones the method needs)."""
        BasePolicyModule.configure_model(self)

    def connect_data(self, datamodule: L.LightningDataModule) -> None:
        """Give ``datamodule`` what it needs from the models (its ``connect``); idempotent."""
