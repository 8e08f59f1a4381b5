"""PreferenceModule: the pair-training step shared by DPO, preference MLE and preference
distillation.

These objectives train on (prompt, chosen, rejected) pairs from a
:class:`~lit_align.data.PreferenceDataModule` instead of sampling: each step computes the
policy's sequence log-probs of both completions in one forward pass per minibatch of pairs,
calls the method's pair loss, and (optionally) adds a KL(π‖π0) term on fresh samples from π
(the β·KL(π‖π0) terms of Yun et al. 2025, arXiv:2506.01523, eqs. 4–5 and 11).

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
from torch import Tensor

from lit_align import estimators
from lit_align.data.preference import Pair, PreferenceBatch, PreferenceDataModule
from lit_align.data.preference_pairs import cached_reference_log_probs, set_reference_log_probs
from lit_align.losses import rl_kl_loss
from lit_align.methods.offline import OfflineModule, attached_datamodule, model_device
from lit_align.methods.stepping import even_chunks
from lit_align.models.policy import Samples


class PreferenceModule(OfflineModule):
    """Base of the offline preference methods. Subclasses implement :meth:`pair_loss`.

    Args:
        track_kl: every ``kl_every_n_steps`` steps, sample ``n_samples`` completions from π for
            up to ``kl_prompts`` prompts of the batch and log KL(π‖π0) and the length.
        kl_every_n_steps: how often (training steps) the KL(π‖π0) diagnostic is drawn.
        kl_prompts: prompts of the batch used for the diagnostic (and for the KL term of
            methods that have one).
        Other arguments: :class:`~lit_align.methods.offline.OfflineModule`.
    """

    uses_reference_log_probs = False  # DPO reads log π0 of the pairs, computed in prepare_pairs

    def __init__(self, track_kl: bool = True, kl_every_n_steps: int = 1, kl_prompts: int = 1, **kwargs) -> None:
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

        trainer = self.attached_trainer
        callbacks = trainer.callbacks if trainer is not None else []
        return bool(self.hparams.track_kl) or any(isinstance(cb, WinRate) for cb in callbacks)

    @property
    def reference_is_policy(self) -> bool:
        """π0 used only for the reference pass (DPO without KL tracking) is the policy itself, still
        untrained when :meth:`prepare_pairs` runs, instead of a second copy (~0.5 GB less peak
        memory on SmolLM2); it is released once the reference log-probs are computed."""
        return self.uses_reference_log_probs and not self.needs_reference_model() and not self.hparams.frozen_dtype

    @property
    def needs_base(self) -> bool:
        return not self.reference_is_policy

    def on_models_ready(self) -> None:
        if self.engine.base is None:
            self.engine.base = self.engine.model

    # -------------------------------------------------------------------- data
    def connect_data(self, datamodule) -> None:
        if isinstance(datamodule, PreferenceDataModule):
            self.prepare_pairs(datamodule)

    def prepare_pairs(self, datamodule: PreferenceDataModule) -> None:
        """Tokenise ``datamodule``'s pairs with this method's policy and, if the method uses them,
        compute their reference log-probs under π0; π0 is then released when nothing else needs
        it, so training holds one model."""
        self.build_models()
        datamodule.connect(self.policy, self.engine.base)
        if not self.uses_reference_log_probs or not datamodule.train_pairs:
            return
        if math.isnan(datamodule.train_pairs[0].ref_chosen):
            for pairs in (datamodule.train_pairs, datamodule.val_pairs):
                if pairs:
                    set_reference_log_probs(pairs, *self.reference_log_probs(pairs, datamodule.reference_cache_dir()))
        if not self.needs_reference_model():
            self.engine.base = None

    def reference_log_probs(self, pairs: list[Pair], cache_dir: Path | None) -> tuple[Tensor, Tensor]:
        """``(log π0(chosen), log π0(rejected))`` of ``pairs`` (read from ``cache_dir`` when cached),
        in the context of the gradient passes (``grad_dtype`` autocast, attention kernel): log π0 of
        a pair then has the numerics of log π in the loss, and h = Δπ − Δπ0 starts at 0 (trl's
        reference model runs under the same autocast)."""
        model = self.engine.base
        device = model_device(model)
        if self.device != device:  # models built on the Trainer's device (its tensor_init_context)
            self.to(device)
        with self.engine.grad_autocast(model):
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

    def accumulate_pairs(self, batch: PreferenceBatch, loss_fn: Callable[[PreferenceBatch, Tensor, Tensor], Tensor]
                         ) -> tuple[Tensor, Tensor, Tensor]:
        """Backward ``loss_fn`` over minibatches of pairs, weighted to a full-batch mean.
        Returns the detached log-probs of the chosen and rejected completions and the loss."""
        chosen, rejected = [], []

        def loss_of(rows: slice) -> Tensor:
            mb = batch.select(rows)
            log_pi = self.sequence_log_probs(mb.samples)
            lc, lr = log_pi[: len(mb)], log_pi[len(mb):]
            chosen.append(lc.detach())
            rejected.append(lr.detach())
            return loss_fn(mb, lc, lr)

        total = self.accumulate_backward(even_chunks(len(batch), self.hparams.minibatch_size), loss_of)
        return torch.cat(chosen), torch.cat(rejected), total

    def kl_samples(self, batch: PreferenceBatch) -> Samples:
        """Fresh samples from π for the KL(π‖π0) term: ``n_samples`` per prompt of the batch."""
        return self.sample(self.kl_prompts_of(batch))

    def kl_regulariser(self, samples: Samples, coef: float) -> dict:
        """Backward ``coef·KL(π‖π0)`` estimated on samples from π (score-function gradient,
        :func:`lit_align.losses.rl_kl_loss` with zero reward); returns the diagnostic metrics.
        ``coef = 0`` only measures."""
        log_a = self.engine.base_log_prob(samples).double()
        if coef > 0:
            zero, log_pis = torch.zeros_like(log_a), []

            def loss_of(rows: slice) -> Tensor:
                log_pis.append(self.sequence_log_probs(samples.select(rows)))
                return rl_kl_loss(log_pis[-1], zero[rows], log_a[rows], coef)

            self.accumulate_backward(even_chunks(len(samples), self.hparams.minibatch_size), loss_of)
            log_pi = torch.cat([lp.detach() for lp in log_pis])
        else:
            log_pi = self.engine.policy_log_prob(samples)
        return self.policy_metrics(samples, log_pi.double(), log_a)

    def policy_metrics(self, samples: Samples, log_pi: Tensor, log_a: Tensor) -> dict:
        """KL(π‖π0), sample length and the negative log-likelihoods, on samples from π."""
        return {"kl_policy_base": estimators.kl_policy_base(log_pi, log_a),
                "length": self.gather(samples.lengths.double()).mean(),
                "nll_policy": -log_pi.double().mean(), "nll_base": -log_a.double().mean()}

    def sampled_kl_coef(self) -> float:
        """Weight of the sampled KL(π‖π0) term in the loss (0: diagnostic only)."""
        return 0.0

    def kl_prompts_of(self, batch: PreferenceBatch) -> list[str]:
        return list(dict.fromkeys(batch.prompts))[: self.hparams.kl_prompts]

    def training_step(self, batch, batch_idx: int) -> None:
        batch = self._check_batch(batch)
        log_c, log_r, loss = self.accumulate_pairs(batch, self.pair_loss)
        m = {"loss": loss}
        coef = self.sampled_kl_coef()
        if coef > 0 or (self.hparams.track_kl and self.global_step % self.hparams.kl_every_n_steps == 0):
            m.update(self.kl_regulariser(self.kl_samples(batch), coef))
        stepped = self.optimizer_step_guarded()
        m.update(self.pair_metrics(batch, log_c, log_r))
        m["step_skipped"] = float(not stepped)
        self.log_metrics(m, "train")
        self.log("accuracy", m["accuracy"], prog_bar=True, batch_size=1, logger=False)

    # ------------------------------------------------------------ validation
    @torch.no_grad()
    def validation_step(self, batch, batch_idx: int) -> None:
        batch = self._check_batch(batch)
        log_pi = self.policy.log_prob(self.model, batch.samples, 2 * self.hparams.minibatch_size)
        lc, lr = log_pi[: len(batch)], log_pi[len(batch):]
        m = {"loss": self.pair_loss(batch, lc, lr), **self.pair_metrics(batch, lc, lr)}
        prompts = self.kl_prompts_of(batch)
        if self.engine.base is not None:
            samples = self.sample(prompts, self.hparams.val_samples)
            log_a = self.engine.base_log_prob(samples)
            m.update(self.policy_metrics(samples, self.engine.policy_log_prob(samples).double(), log_a.double()))
        dm = attached_datamodule(self)
        if getattr(dm, "target_model", None) is not None:
            m["kl_target_policy"] = dm.kl_target_policy(self.policy, self.model, prompts, self.hparams.val_samples,
                                                        self.hparams.minibatch_size)
        self.log_metrics(m, "val", sync_dist=True)
