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

from typing import Callable

import torch
from torch import Tensor

from lit_align import estimators
from lit_align.data.preference import PreferenceBatch, PreferenceDataModule
from lit_align.losses import rl_kl_loss
from lit_align.methods.offline import OfflineModule, attached_datamodule
from lit_align.methods.stepping import even_chunks
from lit_align.models.policy import Samples
from lit_align.preference import soft_label_accuracy


def soft_label_metrics(batch: PreferenceBatch, margin: Tensor) -> dict:
    """With the labeller's P(chosen ≻ rejected) in the data: ``expected_accuracy`` of ranking by
    ``margin`` against fresh labels and ``accuracy_ceiling`` (:func:`soft_label_accuracy`)."""
    if batch.soft_label is None:
        return {}
    expected, ceiling = soft_label_accuracy(margin, batch.soft_label.to(margin.device))
    return {"expected_accuracy": expected, "accuracy_ceiling": ceiling}


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

    def __init__(self, track_kl: bool = True, kl_every_n_steps: int = 1, kl_prompts: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        if kl_every_n_steps < 1 or kl_prompts < 1:
            raise ValueError("kl_every_n_steps and kl_prompts must be ≥ 1")

    # -------------------------------------------------------------------- data
    def connect_data(self, datamodule) -> None:
        if isinstance(datamodule, PreferenceDataModule):
            self.prepare_pairs(datamodule)

    def prepare_pairs(self, datamodule: PreferenceDataModule) -> None:
        """Tokenise ``datamodule``'s pairs with this method's policy (synthetic pairs are drawn from
        π0 first). DPO also computes their reference log-probs here."""
        self.build_models()
        datamodule.connect(self.policy, self.engine.base)

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
        return {"accuracy": (margin > 0).double().mean(), "logp_margin": margin.mean(),
                **soft_label_metrics(batch, margin)}

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
