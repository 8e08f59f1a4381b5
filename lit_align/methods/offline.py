"""OfflineModule: the base of the methods that train on a dataset rather than on their own
samples (PHF, the reward model, DPO / preference MLE / preference distillation).

It shares the engine, the optimizer, the guarded steps and the checkpoint state of
:class:`~lit_align.methods.engine_module.EngineModule` with the on-policy methods, but no
rollout: a method backwards its loss over minibatches of its batch with
:meth:`~lit_align.methods.stepping.GuardedSteps.accumulate_backward`. Samples it draws
itself (KL(π‖π0) diagnostics, evaluation callbacks) are exact ancestral samples.

The models come first, then the data: once the models exist the method connects its data
module to them (litgpt's ``connect`` pattern). The data module receives a tokenizer (or a
:class:`~lit_align.models.Policy`) and never reads the method; anything computed from the
data with a model (DPO's reference log-probs) is computed by the method.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import lightning as L
from torch import Tensor, nn

from lit_align import distributed
from lit_align.methods.engine_module import EngineModule
from lit_align.models.limits import check_positive_int
from lit_align.models.policy import Samples
from lit_align.models.settings import SamplingSettings


def attached_datamodule(module: L.LightningModule) -> L.LightningDataModule | None:
    """The data module of the Trainer ``module`` is attached to (None outside a Trainer)."""
    return getattr(distributed.trainer_of(module), "datamodule", None)


class OfflineModule(EngineModule):
    """Engine, optimizer, guarded steps and checkpoint state, for methods that learn from data.

    Args:
        model: a model name for :func:`lit_align.models.load` (hub name, local folder,
            ``.gguf`` file, ``smollm2``, ``tiny-gpt2``, ``toy``, ``toy:std=0.1``).
        tokenizer: tokenizer name or folder when it differs from ``model``.
        n_samples: policy samples per prompt when the method samples (KL(π‖π0) terms).
        minibatch_size: rows per forward/backward pass (gradients are accumulated).
        max_new_tokens: completion length cap of the samples.
        chat_template: wrap each prompt as a user turn with the tokenizer's chat template.
        max_prompt_length: longer prompts keep their last tokens (with a warning).
        val_samples: policy samples per prompt in validation.
        lr, optimizer, weight_decay, betas, warmup_steps: Adam(W) with linear warm-up.
        max_grad_norm: gradient clipping (None: off).
        max_bad_steps: stop after this many consecutive steps with a non-finite loss/gradient.
        model_seed: initialisation seed for random models (``tiny-*``, ``toy``).
        gradient_checkpointing: trade compute for activation memory.
        lora: train LoRA adapters (Hu et al. 2021, arXiv:2106.09685; peft ``LoraConfig``
            fields over ``r: 8, lora_alpha: 16, lora_dropout: 0, target_modules: all-linear``)
            instead of all weights; π0 is then the policy with its adapters off.
        frozen_dtype: keep a frozen copy of π0 in this dtype (``bfloat16``, ``float16``).
        grad_dtype: run the gradient passes (and the reference pass they are compared with)
            under ``torch.autocast`` in this dtype (``auto``: ``bfloat16`` where the machine has
            native bf16, else fp32; :func:`~lit_align.models.settings.native_bf16`).
        train_attention: attention kernel of the gradient passes (``auto``: ``eager`` when
            ``grad_dtype`` is set on a CPU, else the model's own).
    """

    def __init__(
        self,
        model: str = "smollm2",
        tokenizer: str | None = None,
        n_samples: int = 32,
        minibatch_size: int = 8,
        max_new_tokens: int = 40,
        chat_template: bool = False,
        max_prompt_length: int | None = None,
        val_samples: int = 32,
        lr: float = 1.41e-5,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        max_grad_norm: float | None = None,
        max_bad_steps: int = 10,
        model_seed: int = 0,
        gradient_checkpointing: bool = False,
        lora: dict | None = None,
        frozen_dtype: str | None = None,
        grad_dtype: str | None = None,
        train_attention: str | None = "auto",
    ) -> None:
        super().__init__()
        check_positive_int("n_samples", n_samples)
        check_positive_int("val_samples", val_samples)
        self.save_hyperparameters(ignore=self._hparams_ignore())
        self.init_engine_module()
        # exact ancestral sampling whatever else the hparams hold (PHF's `temperature` is RWR's)
        sampling = SamplingSettings(max_new_tokens, chat_template=chat_template, max_prompt_length=max_prompt_length)
        self.engine_settings = replace(self.engine_settings, sampling=sampling)

    def _hparams_ignore(self) -> list[str]:
        return []

    # ------------------------------------------------------------ models, data
    def configure_model(self) -> None:
        """Build the engine, then connect the Trainer's data module to it: inside Lightning's
        model-building hook (after ``setup``), so before a checkpoint is restored: whatever
        :meth:`connect_data` computes with π0 sees the untrained weights."""
        self.build_models()
        datamodule = attached_datamodule(self)
        if datamodule is not None and hasattr(datamodule, "connect"):
            self.connect_data(datamodule)

    def build_models(self) -> None:
        """Build the engine (idempotent), without connecting any data."""
        super().configure_model()

    def connect_data(self, datamodule: L.LightningDataModule) -> None:
        """Give ``datamodule`` what it needs from the models (its ``connect``); idempotent."""

    # ------------------------------------------------------------------ passes
    def sample(self, contexts: Sequence[str], n: int | None = None, model: nn.Module | None = None) -> Samples:
        """``n`` (default ``n_samples``) completions per context from ``model`` (default π)."""
        return self.engine.sample(contexts, n or self.hparams.n_samples, model)

    def sequence_log_probs(self, samples: Samples) -> Tensor:
        """log π of each row, with gradients, in the context of the gradient passes."""
        with self.engine.grad_autocast():
            log_pi = self.engine.token_log_probs(self.model, samples).sum(-1).float()
        self.timer.count("train", samples.prompt_mask.sum() + samples.completion_mask.sum())
        return log_pi
