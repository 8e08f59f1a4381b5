"""BasePolicyModule: the former shared base, kept for the offline methods (PHF, reward model,
DPO, PMLE, preference distillation) until they move to the offline base over
:class:`~lit_align.methods.engine_module.EngineModule`; the on-policy methods stand on
:class:`~lit_align.methods.on_policy.OnPolicyModule`.

It owns the trainable policy, the frozen base LM ``a`` (kept out of the checkpoint: it is
reloaded from its name), the tokenizer and :class:`~lit_align.models.Policy` (sampling and
sequence log-probs), the optimizer and warm-up schedule, minibatch gradient accumulation
with manual optimisation, guards against non-finite losses and gradients, cross-rank
gathering of per-sample estimates, the common validation metrics and the RNG state in the
checkpoint. A method adds its loss and its own state.
"""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Callable, Sequence

import lightning as L
import torch
from torch import Tensor, nn

from lit_align import distributed, estimators
from lit_align.models import lora as lora_lib
from lit_align.models.attention import IMPLEMENTATIONS, attention_implementation
from lit_align.models.limits import check_positive_int
from lit_align.models.settings import SamplingSettings
from lit_align.models.loading import load
from lit_align.memory import preallocate_optimizer_state
from lit_align.models.policy import Policy, Samples, disable_dropout
from lit_align.scorers.base import Scorer
from lit_align.timing import PhaseTimer
from lit_align.methods.engine_module import EngineModule
from lit_align.methods.stepping import even_chunks


class BasePolicyModule(EngineModule):
    """Shared machinery of on-policy methods (DPG, REINFORCE, RL with KL, ...).

    Args:
        model: a model name for :func:`lit_align.models.load` (hub name, local folder,
            ``.gguf`` file, ``smollm2``, ``tiny-gpt2``, ``toy``).
        tokenizer: tokenizer name or folder when it differs from ``model``.
        n_samples: samples per context per training step.
        minibatch_size: samples per forward/backward pass (gradients are accumulated).
        max_new_tokens: completion length cap.
        temperature, top_k, top_p: sampling warps; defaults are exact ancestral sampling.
        chat_template: wrap each context as a user turn with the tokenizer's chat template.
        max_prompt_length: longer prompts keep their last tokens (with a warning).
        lr, optimizer, weight_decay, betas, warmup_steps: Adam(W) with linear warm-up.
        max_grad_norm: gradient clipping (None: off).
        val_samples: samples per validation context.
        max_bad_steps: stop after this many consecutive steps with a non-finite loss/gradient.
        max_steps_without_signal: stop after this many consecutive steps that give no gradient
            signal at all (e.g. DPG with Ẑ = 0: no sample has satisfied the target yet); None: never.
        model_seed: initialisation seed for random models (``tiny-*``, ``toy``).
        gradient_checkpointing: trade compute for activation memory.
        lora: train LoRA adapters (peft) instead of all weights: ``LoraConfig`` fields over
            ``r: 8, lora_alpha: 16, lora_dropout: 0, target_modules: all-linear``. The base LM is
            then the adapter-disabled policy and snapshots hold adapter weights only (docs/scale.md).
        frozen_dtype: keep frozen full copies (the base, a full proposal) in this dtype
            (``bfloat16``, ``float16``); None keeps the policy's dtype.
        sampler: ``native`` (exact KV-cache sampler) or ``vllm`` (a vLLM engine given the sampled
            model's current weights before each call; ``log_q`` is still recomputed by the training
            model; docs/scale.md); ``sampler_kwargs`` go to ``vllm.LLM``.
        grad_dtype: run only the gradient passes (the policy's forward + backward) under
            ``torch.autocast`` in this dtype (``bfloat16``); sampling, the sampled ``log_q``, the
            base/proposal log-probs and hence every importance weight and Ẑ stay in the model's
            dtype. Up to ~3.5× faster matmuls on CPUs with bf16 units and on GPUs.
        sample_dtype: sample under ``torch.autocast`` in this dtype (``bfloat16``). The proposal is
            then the bf16 policy, and ``log_q`` is that distribution's exact log-prob (taken in the
            same forward), so importance weights stay exact; on-policy methods then use ``log_q``
            (not the fp32 forward) as q.
        train_attention: attention kernel of the gradient passes (``eager``, ``sdpa``, ...);
            ``auto`` (default): ``eager`` when ``grad_dtype`` is set and the model is on a CPU
            (PyTorch's fused CPU attention is slow in bf16 backward passes), else the model's own.
    """

    needs_base: bool = True
    # plain attributes here (EngineModule reads them from its engine)
    policy = None
    tokenizer = None

    def __init__(
        self,
        model: str = "smollm2",
        tokenizer: str | None = None,
        n_samples: int = 32,
        minibatch_size: int = 8,
        max_new_tokens: int = 40,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        chat_template: bool = False,
        max_prompt_length: int | None = None,
        lr: float = 1.41e-5,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        max_grad_norm: float | None = None,
        val_samples: int = 32,
        max_bad_steps: int = 10,
        max_steps_without_signal: int | None = 1000,
        model_seed: int = 0,
        gradient_checkpointing: bool = False,
        lora: dict | None = None,
        frozen_dtype: str | None = None,
        sampler: str = "native",
        sampler_kwargs: dict | None = None,
        grad_dtype: str | None = None,
        sample_dtype: str | None = None,
        train_attention: str | None = "auto",
    ) -> None:
        super().__init__()
        self.timer = PhaseTimer()  # enabled by callbacks.PerfMonitor
        # every setting is checked here, before any model is loaded (docs/bad_inputs.md)
        for name, value in (("n_samples", n_samples), ("minibatch_size", minibatch_size),
                            ("val_samples", val_samples), ("max_bad_steps", max_bad_steps)):
            check_positive_int(name, value)
        check_positive_int("max_steps_without_signal", max_steps_without_signal, allow_none=True)
        check_positive_int("warmup_steps", warmup_steps, minimum=0)
        SamplingSettings(max_new_tokens, temperature, top_k, top_p, chat_template, max_prompt_length)
        if not isinstance(optimizer, str) or optimizer.lower() not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {optimizer!r}")
        if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if max_grad_norm is not None and not (isinstance(max_grad_norm, (int, float)) and max_grad_norm > 0):
            raise ValueError(f"max_grad_norm must be > 0 or null, got {max_grad_norm}")
        if frozen_dtype not in (None, "float32", "bfloat16", "float16"):
            raise ValueError(f"frozen_dtype must be null, float32, bfloat16 or float16, got {frozen_dtype!r}")
        for name, value in (("grad_dtype", grad_dtype), ("sample_dtype", sample_dtype)):
            if value not in (None, "float32", "bfloat16", "float16"):
                raise ValueError(f"{name} must be null, float32, bfloat16 or float16, got {value!r}")
        if train_attention not in (None, "auto", *IMPLEMENTATIONS):
            raise ValueError(f"train_attention must be null, auto or one of {', '.join(IMPLEMENTATIONS)}, "
                             f"got {train_attention!r}")
        if sampler not in ("native", "vllm"):
            raise ValueError(f"sampler must be 'native' or 'vllm', got {sampler!r}")
        if sampler == "vllm":
            from lit_align.models.vllm_check import require_vllm

            require_vllm()
        if lora is not None:
            lora_lib.require_peft()  # a clear error now rather than after loading the model
            self.strict_loading = False  # LoRA checkpoints leave the frozen weights out
        self.save_hyperparameters(ignore=self._hparams_ignore())
        self.automatic_optimization = False
        self.model: nn.Module | None = None
        self.policy: Policy | None = None
        self.tokenizer = None
        self.bad_steps = 0
        self.skipped_steps = 0
        self.steps_without_signal = 0
        self.last_samples: Samples | None = None

    def _hparams_ignore(self) -> list[str]:
        return []

    # ------------------------------------------------------------------ models
    def setup(self, stage: str) -> None:
        """Refuse an unsupported strategy before the models are built."""
        distributed.check_strategy(self.trainer, self.hparams.get("max_grad_norm"), self.hparams.get("sampler"))
        # ZeRO-3 loses a second backward's gradients (distributed.ZERO3_ONE_BACKWARD): decided once
        self.one_backward_per_step = distributed.deepspeed_stage(self.trainer) >= 3
        if self.one_backward_per_step:
            # built here, outside Lightning's deepspeed.zero.Init: the frozen copies (base, DPG
            # proposal) stay whole modules; DeepSpeed partitions the registered ones at initialize
            self.configure_model()

    def configure_model(self) -> None:
        """Load the policy (and the frozen base); called by the Trainer before fit/validate."""
        if self.model is not None:
            return
        hp = self.hparams
        model, tok = load(hp.model, hp.tokenizer, seed=hp.model_seed)
        if hp.lora is not None:
            model = lora_lib.apply_lora(model, hp.lora)
        disable_dropout(model)  # after LoRA: its adapters' dropout too
        if hp.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
            # non-reentrant: gradients reach the adapters even though the embeddings are frozen
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # from_pretrained returns eval mode, which Lightning keeps; transformers checkpoints only in
        # train mode. With dropout off, train mode changes nothing else (sampling switches to eval).
        model.train()
        self.model = model
        self.tokenizer = tok
        self.policy = Policy(
            tok, hp.max_new_tokens, hp.temperature, hp.top_k, hp.top_p, hp.chat_template, hp.max_prompt_length
        )
        if self.needs_base:
            # kept out of nn.Module registration (and so out of the checkpoint and of DDP); with
            # LoRA it is the policy itself with the adapters off (no second copy of the weights)
            self.__dict__["_base_model"] = self.make_base(model)
        self.on_models_ready()

    def make_base(self, model: nn.Module) -> nn.Module:
        """The frozen prior ``a``: the policy with its adapters off (LoRA), else a frozen copy."""
        return lora_lib.AdapterDisabled(model) if lora_lib.is_lora(model) else self.frozen_copy(model)

    def on_models_ready(self) -> None:
        """Hook for methods that build more state once the policy exists (e.g. DPG's proposal)."""

    def frozen_copy(self, model: nn.Module) -> nn.Module:
        """A frozen snapshot of ``model``: a full copy, or with LoRA the adapter weights of the policy."""
        if model is self.model and lora_lib.is_lora(model):
            return lora_lib.AdapterSnapshot(model)
        frozen = copy.deepcopy(model)
        frozen.requires_grad_(False)
        frozen.eval()
        if self.hparams.get("frozen_dtype"):
            frozen.to(getattr(torch, self.hparams.frozen_dtype))
        return frozen

    def refresh_snapshot(self, snapshot: nn.Module) -> None:
        """Set a :meth:`frozen_copy` of the policy to the policy's current weights (q ← π)."""
        if isinstance(snapshot, lora_lib.AdapterSnapshot):
            snapshot.refresh()
        else:
            snapshot.load_state_dict(self.model.state_dict())

    @property
    def base_model(self) -> nn.Module:
        """The frozen prior ``a``. Not a registered submodule: it stays out of the checkpoint."""
        return self.__dict__["_base_model"]

    def _move_frozen(self) -> None:
        if "_base_model" in self.__dict__:
            self.__dict__["_base_model"].to(self.device)

    def on_fit_start(self) -> None:
        self._move_frozen()
        self._setup_ranks()

    def on_validation_start(self) -> None:
        self._move_frozen()
        if self.trainer.state.fn != "fit":
            self._setup_ranks()

    def _setup_ranks(self) -> None:
        """Per-rank sampling streams; the same number of decoding steps on all ranks when sharded."""
        if distributed.world_size(self.attached_trainer) > 1:
            distributed.seed_per_rank(self.global_rank)
            if distributed.is_sharded(self.trainer) and self.policy is not None:
                self.policy.sync_finished = lambda done: distributed.all_ranks(self.trainer, done)

    def on_predict_start(self) -> None:
        self._move_frozen()

    # ------------------------------------------------------------- optimizers
    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.optimized_parameters() if p.requires_grad]
        cls = torch.optim.AdamW if hp.optimizer.lower() == "adamw" else torch.optim.Adam
        opt = None
        if params and all(p.device.type == "cpu" for p in params) and self.grad_scaler() is None:
            # the fused CPU kernel: ~4× faster than the per-tensor loop (0.18 s vs 0.66 s on SmolLM2)
            try:
                opt = cls(params, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay, fused=True)
            except (RuntimeError, TypeError):
                opt = None
        if opt is None:
            opt = cls(params, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        if not distributed.strategy_is(self.attached_trainer, "DeepSpeedStrategy"):  # it swaps in its own flat groups
            preallocate_optimizer_state(opt)
        warmup = max(int(hp.warmup_steps), 0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (warmup + 1)) if warmup else 1.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def optimized_parameters(self):
        """Parameters the optimizer trains (and whose gradients are checked): the policy's by
        default; a method with more trainable modules (e.g. PPO's value head) adds them."""
        return self.model.parameters()

    # ---------------------------------------------------------------- helpers
    def sample(self, contexts: Sequence[str], n: int | None = None, model: nn.Module | None = None) -> Samples:
        n = n or self.hparams.n_samples
        with self.timer("sampling"):
            model = model or self.model
            # a LoRA snapshot swaps its adapter weights in once for the whole sampling call
            swap = model.swapped() if isinstance(model, lora_lib.AdapterSnapshot) else contextlib.nullcontext()
            with swap, self._autocast("sample_dtype"):
                samples = self.sampler_backend.sample(model, list(contexts), n)
        # the prompt is prefilled once per context, each completion token decoded once
        self.timer.count("forward", samples.completion_mask.sum() + samples.prompt_mask.sum() // n)
        self.timer.samples += len(samples)
        return samples

    @property
    def sampler_backend(self):
        """What draws samples: the :class:`Policy` itself, or the vLLM engine (``sampler: vllm``)."""
        if self.hparams.get("sampler", "native") == "native":
            return self.policy
        if "_vllm" not in self.__dict__:
            from lit_align.models.vllm_sampler import VLLMSampler

            # the engine keeps the model's dtype unless sampler_kwargs set one: under bf16 autocast
            # (sample_dtype, precision bf16-mixed) an fp32 engine is the closer one (docs/scale.md)
            self.__dict__["_vllm"] = VLLMSampler(self.policy, self.hparams.get("sampler_kwargs"))
        return self.__dict__["_vllm"]

    @torch.no_grad()
    def log_prob_no_grad(self, model: nn.Module, samples: Samples) -> Tensor:
        with self.timer("log_probs"):
            out = self.policy.log_prob(model, samples, self.hparams.minibatch_size)
        self.timer.count("forward", samples.prompt_mask.sum() + samples.completion_mask.sum())
        return out

    def base_log_prob(self, samples: Samples) -> Tensor:
        return self.log_prob_no_grad(self.base_model, samples)

    def score(self, scorers: Sequence[Scorer], samples: Samples) -> dict[str, Tensor]:
        with self.timer("scoring"):
            return {s.name: s(samples.texts, samples.contexts).to(self.device) for s in scorers}

    def accumulate(
        self, samples: Samples, loss_fn: Callable[[Samples, Tensor, slice], Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Backward ``loss_fn(minibatch, log_pi, rows)`` over minibatches, weighted to a full-batch mean.

        ``rows`` is the minibatch's slice of the full batch (to index per-sample tensors).
        Returns the policy's sequence log-probs of all samples (detached) and the loss.
        """
        log_pis, n = [], len(samples)
        # kept for diagnostics (callbacks.GradientVariance re-evaluates it on single samples)
        self.last_loss_fn, self.last_loss_samples = loss_fn, samples

        def loss_of(rows: slice) -> Tensor:
            mb = samples.select(rows)
            with self.grad_autocast():
                log_pi = self.policy.token_log_probs(self.model, mb).sum(-1).float()
            self.timer.count("train", mb.prompt_mask.sum() + mb.completion_mask.sum())
            log_pis.append(log_pi.detach())
            return loss_fn(mb, log_pi, rows)

        total = self.accumulate_backward(even_chunks(n, self.hparams.minibatch_size), loss_of)
        return torch.cat(log_pis), total

    @property
    def grad_dtype_set(self) -> bool:
        """Gradient passes or sampling in lower precision: on-policy weights then use the sampled
        ``log_q`` for q (the exact density of what was sampled), never a forward of another precision."""
        return any(self.hparams.get(k) not in (None, "float32") for k in ("grad_dtype", "sample_dtype"))

    @contextlib.contextmanager
    def grad_autocast(self, model: nn.Module | None = None):
        """Context of the gradient passes' forward: autocast (``grad_dtype``) and the attention
        kernel (``train_attention``) of ``model`` (default the policy); a no-op by default."""
        choice = self.hparams.get("train_attention", "auto")
        if choice == "auto":
            low = self.hparams.get("grad_dtype") not in (None, "float32")
            choice = "eager" if low and self.device.type == "cpu" else None
        with self._autocast("grad_dtype"), attention_implementation(model or self.model, choice):
            yield

    def _autocast(self, option: str):
        dtype = self.hparams.get(option)
        if not dtype or dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=getattr(torch, dtype))

    def gather(self, t: Tensor) -> Tensor:
        """Concatenate a per-sample tensor over all ranks (identity on one process)."""
        if self.trainer is None or self.trainer.world_size == 1:
            return t
        return self.all_gather(t).reshape(-1, *t.shape[1:])

    def log_metrics(self, metrics: dict[str, Tensor | float], prefix: str, **kwargs) -> None:
        clean = {f"{prefix}/{k}": float(v) for k, v in metrics.items()}
        on_step = prefix == "train"
        self.log_dict(clean, on_step=on_step, on_epoch=not on_step, batch_size=1, **kwargs)

    def common_metrics(self, samples: Samples, log_pi: Tensor, log_a: Tensor, log_q: Tensor | None) -> dict:
        """KL(π‖a), sample length and entropy proxy, IS-weighted when samples come from q ≠ π."""
        m = {
            "kl_policy_base": estimators.kl_policy_base(log_pi, log_a, log_q),
            "length": self.gather(samples.lengths.double()).mean(),
        }
        if log_q is None:
            m["nll_policy"] = -log_pi.double().mean()
        m["nll_base"] = -log_a.double().mean()
        if self.hparams.get("sampler") == "vllm":  # the engine vs the trained model, largest over ranks
            gap = torch.tensor([self.sampler_backend.last_log_q_gap], device=self.device)
            m["engine_log_q_gap"] = self.gather(gap).max()
        return m

    # -------------------------------------------------------------- validation
    def validation_step(self, batch: list[str], batch_idx: int) -> None:
        samples = self.sample(batch, self.hparams.val_samples)
        log_pi = samples.log_q if self.policy.exact else self.log_prob_no_grad(self.model, samples)
        log_a = self.base_log_prob(samples) if self.needs_base else log_pi
        metrics = self.common_metrics(samples, log_pi, log_a, None)
        metrics.update(self.validation_metrics(samples, log_pi, log_a))
        self.log_metrics(metrics, "val", sync_dist=True)

    def validation_metrics(self, samples: Samples, log_pi: Tensor, log_a: Tensor) -> dict:
        """Method-specific validation metrics on fresh policy samples."""
        return {}


def log_mean_exp(x: Tensor) -> Tensor:
    return torch.logsumexp(x.double(), 0) - math.log(x.numel())
