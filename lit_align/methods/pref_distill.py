"""Preference distillation (Yun et al. 2025, arXiv:2506.01523, eqs. 9–12).

Soft labels ``p̂ = σ(R̂(a₁) − R̂(a₂))`` from a reward model on pairs, and the Bernoulli-KL loss
``KL(Bern(p̂) ‖ Bern(σ(γ·Δ_π(a₁, a₂)))) + β·KL(π‖π0)`` (KL term on fresh samples from π).
The pairs are the data's (offline) or, with ``online``, two fresh samples of π_t per prompt
(Algorithm 1 with μ = π_t, as in the paper's experiments). With an exact reward model
``R̂ = γ ln π* + c`` the population optimum is π* (tests/test_preference_toy.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_align.data.preference import PreferenceBatch, collate_pairs
from lit_align.methods.preference_base import PreferenceModule
from lit_align.preference import bt_probability, preference_distillation_loss
from lit_align.scorers.base import Scorer


class PreferenceDistillation(PreferenceModule):
    """Preference distillation from a reward model.

    Args:
        reward: the reward model R̂ as a scorer (e.g. :class:`lit_align.scorers.RewardModelScorer`);
            null uses the data's soft labels (``soft_label_column``).
        gamma: γ of the LM's preference model σ(γ·Δ_π).
        kl_coef: β, weight of KL(π‖π0) estimated on samples from π.
        online: score pairs sampled from the current policy (``n_samples`` per prompt, paired
            up) instead of the data's pairs.
        Other arguments: :class:`PreferenceModule`.
    """

    def __init__(self, reward: Scorer | None = None, gamma: float = 0.1, kl_coef: float = 0.05,
                 online: bool = False, **kwargs) -> None:
        if gamma <= 0 or kl_coef < 0:
            raise ValueError(f"PreferenceDistillation: gamma must be > 0 and kl_coef ≥ 0, got {gamma} and {kl_coef}")
        if online and reward is None:
            raise ValueError("PreferenceDistillation: online pairs need a reward model (`reward`)")
        super().__init__(**kwargs)
        if online and self.hparams.n_samples < 2:
            raise ValueError("PreferenceDistillation: online pairs need n_samples ≥ 2")
        self.reward_model = reward

    def _hparams_ignore(self) -> list[str]:
        return ["reward"]

    @torch.no_grad()
    def soft_labels(self, batch: PreferenceBatch) -> Tensor:
        """p̂ = P(chosen ≻ rejected) = σ(R̂(chosen) − R̂(rejected)) (or the data's labels)."""
        if self.reward_model is None:
            if batch.soft_label is None:
                raise ValueError("PreferenceDistillation without `reward` needs soft labels in the data "
                                 "(PreferenceDataModule soft_label_column)")
            return batch.soft_label
        s = batch.samples
        r = self.reward_model(s.texts, s.contexts).to(self.device)
        n = len(batch)
        return bt_probability(r[:n], r[n:])

    @torch.no_grad()
    def online_pairs(self, batch: PreferenceBatch) -> PreferenceBatch:
        """Pairs of fresh policy samples for the batch's prompts (consecutive samples paired)."""
        from lit_align.data.preference import Pair

        samples = self.sample(self.kl_prompts_of(batch))
        self._online_samples = samples  # reused for the KL(π‖π0) term of this step
        pairs = []
        for i in range(0, len(samples) - 1, 2):
            rows = []
            for j in (i, i + 1):
                m = samples.completion_mask[j].bool()
                rows.append(samples.completion_ids[j][m].tolist())
            prompt = samples.prompt_ids[i][samples.prompt_mask[i].bool()].tolist()
            pairs.append(Pair(samples.contexts[i], prompt, rows[0], rows[1], samples.texts[i], samples.texts[i + 1]))
        return collate_pairs(pairs, self.policy.pad_id).to(self.device)

    def kl_samples(self, batch: PreferenceBatch):
        online = self.__dict__.pop("_online_samples", None)
        return online if online is not None else super().kl_samples(batch)

    def training_step(self, batch, batch_idx: int) -> None:
        batch = self._check_batch(batch)
        if self.hparams.online:
            batch = self.online_pairs(batch)
        batch.soft_label = self.soft_labels(batch)
        super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx: int) -> None:
        batch = self._check_batch(batch)
        batch.soft_label = self.soft_labels(batch)
        super().validation_step(batch, batch_idx)

    def pair_loss(self, batch: PreferenceBatch, log_chosen: Tensor, log_rejected: Tensor) -> Tensor:
        return preference_distillation_loss(log_chosen, log_rejected, batch.soft_label.to(log_chosen.dtype),
                                            self.hparams.gamma)

    def pair_metrics(self, batch: PreferenceBatch, log_chosen: Tensor, log_rejected: Tensor) -> dict:
        m = super().pair_metrics(batch, log_chosen, log_rejected)
        p_model = torch.sigmoid(self.hparams.gamma * (log_chosen - log_rejected).double())
        m["soft_label"] = batch.soft_label.double().mean()
        m["label_error"] = (p_model - batch.soft_label.double()).abs().mean()
        return m

    def sampled_kl_coef(self) -> float:
        return float(self.hparams.kl_coef)
