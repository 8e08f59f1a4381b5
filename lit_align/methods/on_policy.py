"""OnPolicyModule: the one training step of the on-policy methods (DPG, CDPG, REINFORCE, RL-KL,
RLOO, PPO, the Sampler): rollout → objective → update.

    rollout = self.make_rollout(contexts)        # samples, log q, log a, scores (once), log P
    loss, metrics = self.loss_and_metrics(rollout, self.state)   # the method's objective
    rollout.stepped = self.update(rollout, loss) # minibatch backward (fills log π), guarded step
    self.log_metrics(metrics(), "train")         # module.last_rollout is this step's rollout

A method writes ``loss_and_metrics`` (and its ``state``, a
:class:`~lit_align.methods.checkpoint_state.MethodState`); see docs/architecture.md.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from lit_align.methods.checkpoint_state import MethodState
from lit_align.methods.engine_module import EngineModule
from lit_align.methods.rollout_metrics import common_metrics
from lit_align.methods.stepping import even_chunks
from lit_align.models.limits import check_positive_int
from lit_align.models.rollout import Loss, NoSignal, Rollout
from lit_align.models.samples import Samples
from lit_align.targets import EBM

Metrics = Callable[[], dict]


class OnPolicyModule(EngineModule):
    """Shared machinery of the on-policy methods (see the module docstring).

    Args:
        model: a name for :func:`lit_align.models.load` (hub name, folder, ``.gguf``, ``smollm2``,
            ``tiny-gpt2``, ``toy``, ``toy:std=0.1``); ``tokenizer``: when it differs; ``model_seed``: for random models.
        n_samples, val_samples: samples per context per training / validation step.
        minibatch_size: samples per forward/backward pass (gradients are accumulated).
        max_new_tokens, temperature, top_k, top_p, chat_template, max_prompt_length: sampling
            (:class:`~lit_align.models.settings.SamplingSettings`; the defaults are exact).
        lr, optimizer, weight_decay, betas, warmup_steps, max_grad_norm: Adam(W), warm-up, clipping.
        lr_schedule: after the warm-up, ``constant``, or ``linear`` / ``cosine`` decay to 0 at
            ``trainer.max_steps`` (:func:`lit_align.schedules.lr_factor`).
        max_bad_steps, max_steps_without_signal: stop after this many steps in a row with a
            non-finite loss/gradient, or without any gradient signal (e.g. DPG with Ẑ = 0; None: never).
        gradient_checkpointing, lora, frozen_dtype, sampler, sampler_kwargs, grad_dtype,
            sample_dtype, sample_cast_weights, train_attention: :class:`~lit_align.models.settings.EngineSettings`.

    Attributes:
        last_rollout: the :class:`~lit_align.models.rollout.Rollout` of the last training step
            (public: callbacks read samples, advantages and the loss from it).
    """

    #: the target EBM of distribution-matching methods (``log_P`` of the rollout), else None
    target: EBM | None = None
    #: the rollout computes the sequence ``log a`` (PPO takes per-token base log-probs itself)
    rollout_reads_base: bool = True
    #: progress-bar name → metric name
    progress_bar: dict[str, str] = {}

    def __init__(
        self, model: str = "smollm2", tokenizer: str | None = None, n_samples: int = 32, minibatch_size: int = 8,
        max_new_tokens: int = 40, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
        chat_template: bool = False, max_prompt_length: int | None = None, lr: float = 1.41e-5,
        optimizer: str = "adam", weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0, lr_schedule: str = "constant", max_grad_norm: float | None = None,
        val_samples: int = 32, max_bad_steps: int = 10,
        max_steps_without_signal: int | None = 1000, model_seed: int = 0, gradient_checkpointing: bool = False,
        lora: dict | None = None, frozen_dtype: str | None = "auto", sampler: str = "native",
        sampler_kwargs: dict | None = None, grad_dtype: str | None = None, sample_dtype: str | None = None,
        sample_cast_weights: bool = False, train_attention: str | None = "auto",
    ) -> None:
        super().__init__()
        # every setting is checked here, before any model is loaded (docs/bad_inputs.md)
        for name, value in (("n_samples", n_samples), ("val_samples", val_samples)):
            check_positive_int(name, value)
        check_positive_int("max_steps_without_signal", max_steps_without_signal, allow_none=True)
        self.save_hyperparameters(ignore=self._hparams_ignore())
        self.init_engine_module()
        self.state = MethodState()
        self.last_rollout: Rollout | None = None

    def _hparams_ignore(self) -> list[str]:
        return []

    def sampling_model(self) -> nn.Module:
        """The proposal q the training samples come from (the policy; DPG: its frozen proposal)."""
        return self.model

    def sample(self, contexts: Sequence[str], n: int | None = None, model: nn.Module | None = None) -> Samples:
        return self.engine.sample(contexts, n or self.hparams.n_samples, model)

    def scorers(self) -> list:
        """The scorers the rollout runs, once each (default: the target's)."""
        return [] if self.target is None else self.target.scorers()

    def rollout_log_a(self, samples: Samples) -> Tensor:
        return self.engine.base_log_prob(samples)

    def make_rollout(self, contexts: Sequence[str], n: int | None = None, model: nn.Module | None = None,
                     with_base: bool = True) -> Rollout:
        """Sample from ``model`` (default :meth:`sampling_model`), then compute ``log a``, every
        scorer's scores and ``log P`` once."""
        samples = self.sample(contexts, n, model or self.sampling_model())
        log_a = self.rollout_log_a(samples).double() if with_base and self.needs_base else None
        with self.timer("scoring"):
            scores = {s: s(samples.texts, samples.contexts) for s in self.scorers()}
            log_P = None if self.target is None else self.target.log_score_from(
                log_a, scores, samples.texts, samples.contexts).to(self.device)
        return Rollout(samples, samples.log_q.double(), log_a, scores, log_P, gather=self.gather)

    # ------------------------------------------------------------------- step
    def loss_and_metrics(self, rollout: Rollout, state: MethodState) -> tuple[Loss | NoSignal | None, Metrics]:
        """The method's objective: a minibatch surrogate (None: no update by design; NoSignal:
        none possible this step) and the metrics, computed after the update."""
        raise NotImplementedError

    def prepare_step(self) -> None:
        """Hook before the rollout (e.g. DPG re-fits λ)."""

    def training_step(self, batch: list[str], batch_idx: int) -> None:
        self.prepare_step()
        rollout = self.make_rollout(batch, with_base=self.rollout_reads_base)
        loss, metrics = self.loss_and_metrics(rollout, self.state)
        rollout.stepped = self.update(rollout, loss)
        self.last_rollout = rollout
        m = metrics()
        self.log_metrics(m, "train")
        for name, key in self.progress_bar.items():
            if key in m:
                self.log(name, m[key], prog_bar=True, batch_size=1, logger=False)

    def update(self, rollout: Rollout, loss: Loss | NoSignal | None) -> bool:
        """Back-propagate ``loss`` over minibatches (filling ``rollout.log_pi``) and step."""
        if loss is None:
            self.skip_step()
            return False
        if isinstance(loss, NoSignal):
            self.skip_step_without_signal(loss.reason)
            return False
        rollout.loss = loss
        rollout.log_pi, rollout.loss_value = self.backward_minibatches(rollout.samples, loss)
        return self.optimizer_step_guarded()

    def backward_minibatches(self, samples: Samples, loss: Loss) -> tuple[Tensor, Tensor]:
        """Accumulate the gradient of the full-batch mean of ``loss``; returns the policy's
        sequence log-probs of the gradient pass (detached) and the loss."""
        log_pis = []

        def loss_of(rows: slice) -> Tensor:
            mb = samples.select(rows)
            with self.engine.grad_autocast():
                log_pi = self.engine.token_log_probs(self.model, mb).sum(-1).float()
            self.timer.count("train", mb.prompt_mask.sum() + mb.completion_mask.sum())
            log_pis.append(log_pi.detach())
            return loss(mb, log_pi, rows)

        total = self.accumulate_backward(even_chunks(len(samples), self.hparams.minibatch_size), loss_of)
        return torch.cat(log_pis), total

    # ---------------------------------------------------------------- metrics
    def common_metrics(self, samples: Samples, log_pi: Tensor, log_a: Tensor | None, log_q: Tensor | None) -> dict:
        """KL(π‖a), length, NLLs (:func:`.rollout_metrics.common_metrics`) and the vLLM engine's gap."""
        m = common_metrics(samples, log_pi, log_a, log_q, self.gather)
        if self.hparams.get("sampler") == "vllm":  # the engine vs the trained model, largest over ranks
            gap = torch.tensor([self.engine.sampler.last_log_q_gap], device=self.device)
            m["engine_log_q_gap"] = self.gather(gap).max()
        return m

    def validation_step(self, batch: list[str], batch_idx: int) -> None:
        rollout = self.make_rollout(batch, self.hparams.val_samples, model=self.model)
        rollout.log_pi = self.engine.policy_log_prob(rollout.samples)
        metrics = self.common_metrics(rollout.samples, rollout.log_pi, rollout.log_a, None)
        metrics.update(self.validation_metrics(rollout))
        self.log_metrics(metrics, "val", sync_dist=True)

    def validation_metrics(self, rollout: Rollout) -> dict:
        """Method-specific validation metrics on fresh policy samples (``rollout.log_pi`` set)."""
        return {}

    # ------------------------------------------------------------- checkpoint
    def extra_state(self) -> dict:
        return self.state.state_dict()

    def load_extra_state(self, state: dict) -> None:
        self.state.load_state_dict(state)
