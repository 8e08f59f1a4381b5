"""Bradley–Terry reward model training (Yun et al. 2025, arXiv:2506.01523, eq. 9; Ouyang et al.
2022, arXiv:2203.02155).

An LM with a scalar head on its last hidden state (at the last completion token) is trained
on preference pairs with ``−ln σ(R(w) − R(l))`` (or the soft-label cross-entropy). At the end
of training it is saved as a folder that :class:`lit_align.scorers.RewardModelScorer` loads,
so it serves as the reward of RL-KL / RLOO / PPO, a DPG tilt, a distillation teacher or a judge.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from lit_align.data.preference import PreferenceBatch, PreferenceDataModule
from lit_align.methods.offline import OfflineModule
from lit_align.methods.preference_base import soft_label_metrics
from lit_align.methods.stepping import even_chunks
from lit_align.models.value_head import hidden_size
from lit_align.preference import bradley_terry_loss
from lit_align.scorers.reward_model import save_reward_model, sequence_rewards


class RewardModel(OfflineModule):
    """Train a reward model on a :class:`~lit_align.data.PreferenceDataModule`.

    Args:
        save_dir: where the trained reward model is written at the end of ``fit``
            (default ``<log dir>/reward_model``, or ``reward_model`` without a logger).
        soft_labels: train on the data's P(chosen ≻ rejected) (``soft_label_column``) instead of hard labels.
        center_rewards_coef: weight of ``mean(R²)`` (TRL's ``center_rewards_coefficient``), which
            fixes the free constant of BT rewards near 0.
        head_lr: learning rate of the reward head (default: ``lr``). The head starts at zero, so
            the trunk gets no gradient until the head has grown: at a fine-tuning lr (1e-5) a
            short run barely leaves R = 0; a larger head lr (e.g. 1e-3) gets it going.
        Other arguments: :class:`~lit_align.methods.offline.OfflineModule` (``model`` is the
            reward model's trunk; sampling arguments are unused).
    """

    needs_base = False

    def __init__(self, save_dir: str | None = None, soft_labels: bool = False, center_rewards_coef: float = 0.0,
                 head_lr: float | None = None, **kwargs) -> None:
        if center_rewards_coef < 0:
            raise ValueError(f"center_rewards_coef must be ≥ 0, got {center_rewards_coef}")
        if head_lr is not None and not head_lr > 0:
            raise ValueError(f"head_lr must be > 0 (or null: lr), got {head_lr}")
        super().__init__(**kwargs)
        self.head: nn.Linear | None = None

    def on_models_ready(self) -> None:
        head = nn.Linear(hidden_size(self.model), 1)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        self.head = head.to(next(self.model.parameters()).device)

    def connect_data(self, datamodule) -> None:
        if isinstance(datamodule, PreferenceDataModule):
            datamodule.connect(self.policy, self.model)

    def optimized_parameters(self):
        return list(self.model.parameters()) + list(self.head.parameters())

    def parameter_groups(self) -> list[dict]:
        if self.hparams.head_lr is None:  # one group, as checkpoints written before head_lr have
            return super().parameter_groups()
        return [{"params": list(self.model.parameters())},
                {"params": list(self.head.parameters()), "lr": self.hparams.head_lr}]

    def pair_rewards(self, batch: PreferenceBatch) -> tuple[Tensor, Tensor]:
        r = sequence_rewards(self.model, self.head, batch.samples)
        return r[: len(batch)], r[len(batch):]

    def loss(self, batch: PreferenceBatch, r_c: Tensor, r_r: Tensor) -> Tensor:
        label = batch.soft_label if self.hparams.soft_labels else None
        if self.hparams.soft_labels and label is None:
            raise ValueError("RewardModel(soft_labels=True) needs soft labels in the data (soft_label_column)")
        loss = bradley_terry_loss(r_c, r_r, label)
        if self.hparams.center_rewards_coef:
            loss = loss + self.hparams.center_rewards_coef * torch.cat([r_c, r_r]).pow(2).mean()
        return loss

    @staticmethod
    def metrics(r_c: Tensor, r_r: Tensor, batch: PreferenceBatch | None = None) -> dict:
        margin = (r_c - r_r).double()
        return {"accuracy": (margin > 0).double().mean(), "margin": margin.mean(),
                "reward_mean": torch.cat([r_c, r_r]).double().mean(),
                **(soft_label_metrics(batch, margin) if batch is not None else {})}

    def training_step(self, batch, batch_idx: int) -> None:
        if not isinstance(batch, PreferenceBatch):
            raise TypeError("RewardModel trains on preference pairs: use a PreferenceDataModule")
        chosen, rejected = [], []

        def loss_of(rows: slice) -> Tensor:
            mb = batch.select(rows)
            r_c, r_r = self.pair_rewards(mb)
            chosen.append(r_c.detach())
            rejected.append(r_r.detach())
            return self.loss(mb, r_c, r_r)

        total = self.accumulate_backward(even_chunks(len(batch), self.hparams.minibatch_size), loss_of)
        stepped = self.optimizer_step_guarded()
        m = self.metrics(torch.cat(chosen), torch.cat(rejected), batch)
        m.update({"loss": total, "step_skipped": float(not stepped),
                  "pair_length": batch.samples.completion_mask.sum(-1).double().mean()})
        self.log_metrics(m, "train")
        self.log("accuracy", m["accuracy"], prog_bar=True, batch_size=1, logger=False)

    @torch.no_grad()
    def validation_step(self, batch, batch_idx: int) -> None:
        r_c, r_r = self.pair_rewards(batch)
        m = self.metrics(r_c, r_r, batch)
        m["loss"] = self.loss(batch, r_c, r_r)
        self.log_metrics(m, "val", sync_dist=True)

    def save(self, folder: str | Path) -> Path:
        hp = self.hparams
        meta = {"base": hp.model, "model_seed": hp.model_seed, "chat_template": hp.chat_template,
                "max_prompt_length": hp.max_prompt_length, "append_eos": True}
        return save_reward_model(folder, self.model, self.head, self.tokenizer, meta)

    def on_train_end(self) -> None:
        trainer = self.attached_trainer
        if trainer is not None and not trainer.is_global_zero:
            return
        folder = self.hparams.save_dir
        if folder is None:
            log_dir = trainer.log_dir if trainer is not None else None
            folder = Path(log_dir or ".") / "reward_model"
        self.saved_to = self.save(folder)
