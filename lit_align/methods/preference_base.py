"""PreferenceModule: the pair-training step shared by DPO, preference MLE and preference
distillation (methods.md §6, §7).

These objectives train on (prompt, chosen, rejected) pairs from a
:class:`~lit_align.data.PreferenceDataModule` instead of sampling: each step computes the
policy's sequence log-probs of both completions in one forward pass per minibatch of pairs,
calls the method's pair loss, and (optionally) adds a KL(π‖π0) term on fresh samples from π.
Everything else (policy, frozen π0, optimizer, guards, checkpointed RNG) is
:class:`BasePolicyModule`'s.

Logged besides the loss: ``train/kl_policy_base`` and ``train/length`` on ``n_samples``
policy samples per prompt (``track_kl``), and in validation the pair metrics on held-out
pairs, KL(π‖π0), and KL(π*‖π) when the data module knows π* (synthetic preferences). The win
rate against π0 is the :class:`lit_align.callbacks.WinRate` callback (any method).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from lit_align.data.preference import Pair, PreferenceBatch, PreferenceDataModule
from lit_align.data.preference_pairs import cached_reference_log_probs, set_reference_log_probs
from lit_align.losses import rl_kl_loss
from lit_align.methods.offline import OfflineModule, attached_datamodule, attached_trainer, model_device


class PreferenceModule(OfflineModule):
    """Base of the offline preference methods. Subclasses implement :meth:`pair_loss`.

    Args:
        track_kl: every ``kl_every_n_steps`` steps, sample ``n_samples`` completions from π for
            up to ``kl_prompts`` prompts of the batch and log KL(π‖π0) and the length.
        kl_every_n_steps: how often (training steps) the KL(π‖π0) diagnostic is drawn.
        kl_prompts: prompts of the batch used for the diagnostic (and for the KL term of
            methods that have one).
        Other arguments: :class:`BasePolicyModule`.
    """

    uses_reference_log_probs = False  # DPO reads log π0 of the pairs, computed in prepare_pairs

    def __init__(
        self,
        track_kl: bool = True,
        kl_every_n_steps: int = 1,
        kl_prompts: int = 1,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if kl_every_n_steps < 1 or kl_prompts < 1:
            raise ValueError("kl_every_n_steps and kl_prompts must be ≥ 1")

    # ------------------------------------------------------------- reference π0
    def reference_id(self) -> str:
        """What identifies π0 and the numerics of its pass (the cache key of its log-probs on the pairs)."""
        hp = self.hparams
        key = f"model={hp.model}|tokenizer={hp.tokenizer}|seed={hp.model_seed}"
        for option in ("frozen_dtype", "grad_dtype"):  # both change the cached numbers
            if hp.get(option) not in (None, "float32"):
                key += f"|{option}={hp.get(option)}"
        return key

    def needs_reference_model(self) -> bool:
        """Whether π0 must stay in memory after the reference log-probs are computed."""
        from lit_align.callbacks.win_rate import WinRate

        trainer = attached_trainer(self)
        callbacks = trainer.callbacks if trainer is not None else []
        return bool(self.hparams.track_kl) or any(isinstance(cb, WinRate) for cb in callbacks)

    def make_base(self, model: nn.Module) -> nn.Module:
        """π0 used only for the reference pass (DPO without KL tracking): the policy itself, still
        untrained when :meth:`connect_data` runs, instead of a second copy (~0.5 GB less peak
        memory on SmolLM2). It is released once the reference log-probs are computed."""
        if self.uses_reference_log_probs and not self.needs_reference_model() and not self.hparams.get("frozen_dtype"):
            return model
        return super().make_base(model)

    # -------------------------------------------------------------------- data
    def connect_data(self, datamodule) -> None:
        if isinstance(datamodule, PreferenceDataModule):
            self.prepare_pairs(datamodule)

    def prepare_pairs(self, datamodule: PreferenceDataModule) -> None:
        """Tokenise ``datamodule``'s pairs with this method's policy and, if the method uses them,
        compute their reference log-probs under π0; π0 is then released when nothing else needs
        it, so training holds one model."""
        if self.model is None:
            self.build_models()
        datamodule.connect(self.policy, self.__dict__.get("_base_model", self.model))
        if not self.uses_reference_log_probs or not datamodule.train_pairs:
            return
        if math.isnan(datamodule.train_pairs[0].ref_chosen):
            for pairs in (datamodule.train_pairs, datamodule.val_pairs):
                if pairs:
                    set_reference_log_probs(pairs, *self.reference_log_probs(pairs, datamodule.reference_cache_dir()))
        if not self.needs_reference_model():
            self.__dict__.pop("_base_model", None)

    def reference_log_probs(self, pairs: list[Pair], cache_dir: Path | None) -> tuple[Tensor, Tensor]:
        """``(log π0(chosen), log π0(rejected))`` of ``pairs``, read from ``cache_dir`` when cached,
        in the context of the gradient passes (``grad_dtype`` autocast, attention kernel): log π0 of
        a pair then has the numerics of log π in the loss, and h = Δπ − Δπ0 starts at 0 (trl's
        reference model runs under the same autocast)."""
        model = self.base_model
        device = model_device(model)
        if self.device != device:  # models built on the Trainer's device (its tensor_init_context)
            self.to(device)
        with self.grad_autocast(model):
            chosen, rejected, _ = cached_reference_log_probs(model, self.policy, pairs, self.reference_id(), cache_dir,
                                                             self.hparams.minibatch_size, device)
        return chosen, rejected

    def _check_batch(self, batch) -> PreferenceBatch:
        if not isinstance(batch, PreferenceBatch):
            raise TypeError(f"{type(self).__name__} trains on preference pairs: use a PreferenceDataModule "
                            f"(data.class_path: lit_align.data.PreferenceDataModule), got a batch of {type(batch).__name__}")
        return batch

    # -------------------------------------------------------------- the step
    def pair_loss(self, batch: PreferenceBatch, log_chosen: Tensor, log_rejected: Tensor) -> Tensor:
        """Mean loss of a minibatch of pairs from the policy's log-probs (with grad)."""
        raise NotImplementedError

    def pair_metrics(self, batch: PreferenceBatch, log_chosen: Tensor, log_rejected: Tensor) -> dict:
        """Detached per-batch metrics of the pair loss (accuracy, margins)."""
        margin = (log_chosen - log_rejected).double()
        return {"accuracy": (margin > 0).double().mean(), "logp_margin": margin.mean()}

    def accumulate_pairs(
        self, batch: PreferenceBatch, loss_fn: Callable[[PreferenceBatch, Tensor, Tensor], Tensor]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Backward ``loss_fn`` over minibatches of pairs, weighted to a full-batch mean.

        Returns the detached log-probs of the chosen and rejected completions and the loss."""
        n, size = len(batch), self.hparams.minibatch_size
        chosen, rejected = [], []
        total = torch.zeros((), device=self.device, dtype=torch.float64)
        for start in range(0, n, size):
            mb = batch.select(slice(start, min(start + size, n)))
            with self.grad_autocast():
                log_pi = self.policy.token_log_probs(self.model, mb.samples).sum(-1).float()
            lc, lr = log_pi[: len(mb)], log_pi[len(mb):]
            loss = loss_fn(mb, lc, lr) * (len(mb) / n)
            self.backward_if_finite(loss)
            chosen.append(lc.detach())
            rejected.append(lr.detach())
            total = total + loss.detach().double()
        return torch.cat(chosen), torch.cat(rejected), total

    def kl_samples(self, batch: PreferenceBatch):
        """Fresh samples from π for the KL(π‖π0) term: ``n_samples`` per prompt of the batch."""
        return self.sample(self.kl_prompts_of(batch))

    def kl_regulariser(self, samples, coef: float) -> dict:
        """Backward ``coef·KL(π‖π0)`` estimated on samples from π (score-function gradient,
        :func:`lit_align.losses.rl_kl_loss` with zero reward); returns the diagnostic metrics.
        ``coef = 0`` only measures."""
        log_a = self.base_log_prob(samples).double()
        if coef > 0:
            zero = torch.zeros_like(log_a)
            log_pi, _ = self.accumulate(samples, lambda mb, lp, rows: rl_kl_loss(lp, zero[rows], log_a[rows], coef))
        else:
            log_pi = samples.log_q.double() if self.policy.exact else self.log_prob_no_grad(self.model, samples)
        return self.common_metrics(samples, log_pi.double(), log_a, None)

    def sampled_kl_coef(self) -> float:
        """Weight of the sampled KL(π‖π0) term in the loss (0: diagnostic only)."""
        return 0.0

    def kl_prompts_of(self, batch: PreferenceBatch) -> list[str]:
        return list(dict.fromkeys(batch.prompts))[: self.hparams.kl_prompts]

    def extra_loss(self, batch: PreferenceBatch) -> dict:
        """Hook for more loss terms backwarded before the step (returns metrics)."""
        return {}

    def training_step(self, batch, batch_idx: int) -> None:
        batch = self._check_batch(batch)
        log_c, log_r, loss = self.accumulate_pairs(batch, self.pair_loss)
        m = {"loss": loss}
        m.update(self.extra_loss(batch))
        coef = self.sampled_kl_coef()
        if coef > 0 or (self.hparams.track_kl and self.global_step % self.hparams.kl_every_n_steps == 0):
            m.update(self.kl_regulariser(self.kl_samples(batch), coef))
        stepped = self.optimizer_step_guarded()
        m.update(self.pair_metrics(batch, log_c, log_r))
        m["step_skipped"] = float(not stepped)
        self.log_metrics(m, "train")
        self.log("accuracy", m["accuracy"], prog_bar=True, batch_size=1, logger=False)

    # ------------------------------------------------------------ validation
    def validation_step(self, batch, batch_idx: int) -> None:
        batch = self._check_batch(batch)
        with torch.no_grad():
            log_pi = self.policy.log_prob(self.model, batch.samples, 2 * self.hparams.minibatch_size)
            lc, lr = log_pi[: len(batch)], log_pi[len(batch):]
            m = {"loss": self.pair_loss(batch, lc, lr)}
            m.update(self.pair_metrics(batch, lc, lr))
            prompts = list(dict.fromkeys(batch.prompts))[: self.hparams.kl_prompts]
            if "_base_model" in self.__dict__:
                samples = self.sample(prompts, self.hparams.val_samples)
                log_pi_s = samples.log_q if self.policy.exact else self.log_prob_no_grad(self.model, samples)
                log_a = self.base_log_prob(samples)
                m.update(self.common_metrics(samples, log_pi_s.double(), log_a.double(), None))
            dm = attached_datamodule(self)
            if getattr(dm, "target_model", None) is not None:
                m["kl_target_policy"] = dm.kl_target_policy(self.policy, self.model, prompts, self.hparams.val_samples,
                                                            self.hparams.minibatch_size)
        self.log_metrics(m, "val", sync_dist=True)
