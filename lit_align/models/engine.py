"""The engine: the models a method trains and reads, without Lightning.

An :class:`Engine` owns the trained policy π, the frozen base/reference ``a`` (the policy with
its LoRA adapters off, or a frozen copy kept in ``frozen_dtype``), the tokenizer and the
:class:`~lit_align.models.Policy` (sampling with the native KV-cache sampler or a vLLM engine,
sequence and token log-probs), the precision of each pass (``grad_dtype`` autocast of the
gradient passes, ``sample_dtype`` autocast of sampling, ``train_attention``) and frozen
snapshots of the policy (an off-policy proposal, refreshed by q ← π).

A LightningModule holds one by composition (``module.engine``) and registers the engine's
policy as its own ``model`` submodule, so checkpoints keep the ``model.*`` keys. Strategies may
wrap that submodule (FSDP): the module then passes ``model_source`` so that the engine always
computes with the module's current ``model``.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from lit_align.models import lora as lora_lib
from lit_align.models.attention import attention_implementation
from lit_align.models.loading import load
from lit_align.models.policy import Policy, Samples, disable_dropout
from lit_align.models.settings import EngineSettings
from lit_align.timing import PhaseTimer


def cast_memo(model: nn.Module, dtype: torch.dtype) -> dict[int, Tensor]:
    """A ``copy.deepcopy`` memo that copies ``model``'s floating parameters and buffers straight into
    ``dtype`` (what ``deepcopy(model).to(dtype)`` gives, without the full-precision copy in between:
    SmolLM2's bf16 base then costs 0.27 GB, not a transient 0.54 GB that the heap keeps)."""
    memo: dict[int, Tensor] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(p.detach().to(dtype, copy=True) if p.is_floating_point() else p.detach().clone(),
                                   requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = b.detach().to(dtype, copy=True) if b.is_floating_point() else b.detach().clone()
    return memo


try:
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    SHARDED: tuple[type, ...] = (FSDPModule, FullyShardedDataParallel)
except ImportError:  # torch built without distributed
    SHARDED = ()


def castable(model: nn.Module) -> bool:
    """Whether :func:`cast_weights` applies: a plain module (no LoRA view or adapters, no FSDP or
    DeepSpeed ZeRO-3 parameters) whose floating parameters are all float32."""
    if isinstance(model, (lora_lib.AdapterSnapshot, lora_lib.AdapterDisabled)) or lora_lib.is_lora(model):
        return False
    if any(isinstance(m, SHARDED) for m in model.modules()):  # FSDP owns its parameters' storage
        return False
    params = list(model.parameters())
    plain = all(type(p.data) is torch.Tensor and p.numel() > 0 and not hasattr(p, "ds_id") for p in params)
    return bool(params) and plain and all(p.dtype == torch.float32 for p in params if p.is_floating_point())


@contextlib.contextmanager
def cast_weights(model: nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """Run ``model`` with its floating parameters cast to ``dtype`` inside the block, without autocast:
    one cast per call instead of autocast's casts of every activation at every decoding step (SmolLM2,
    bf16, 32 × 32 tokens: sampling 1.16–1.17× faster). The residual stream and norms then run in
    ``dtype`` too, so the sampler's density is further from the fp32 policy's than under autocast;
    ``log_q`` stays the exact density of what drew the samples. The parameters (same objects) get
    their float32 data back on exit; buffers are left as they are."""
    params = [p for p in model.parameters() if p.is_floating_point() and p.dtype != dtype]
    full = [p.data for p in params]
    try:
        with torch.no_grad():
            for p in params:
                p.data = p.data.to(dtype)
        yield
    finally:
        for p, data in zip(params, full):
            p.data = data


class Engine:
    """Policy, base, tokenizer, sampling, log-probs and precision (see the module docstring).

    Args:
        settings: what to load and how to compute.
        needs_base: keep the frozen base ``a`` (False: methods that never read it).
        device: the device passes run on (default: the policy's first parameter's).
        timer: phase timer charged with sampling / log-prob / training time.
        loaded: ``(model, tokenizer)`` built by the method instead of loading ``settings.model``
            (PHF: from scratch, with control tokens); LoRA and the rest apply to it.
    """

    def __init__(self, settings: EngineSettings, needs_base: bool = True,
                 device: Callable[[], torch.device] | None = None, timer: PhaseTimer | None = None,
                 loaded: tuple[nn.Module, object] | None = None) -> None:
        self.settings = settings
        self.timer = timer or PhaseTimer()
        self._device = device
        self.model_source: Callable[[], nn.Module] | None = None
        model, self.tokenizer = loaded or load(settings.model, settings.tokenizer, seed=settings.model_seed)
        if settings.lora is not None:
            model = lora_lib.apply_lora(model, settings.lora)
        disable_dropout(model)  # after LoRA: its adapters' dropout too
        if settings.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
            # non-reentrant: gradients reach the adapters even though the embeddings are frozen
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # from_pretrained returns eval mode; transformers checkpoints only in train mode. With
        # dropout off, train mode changes nothing else (sampling switches to eval).
        model.train()
        self._model = model
        self.policy = Policy(self.tokenizer, settings=settings.sampling)
        self._vllm = None
        # with LoRA the base is the policy itself with the adapters off (no second copy)
        self.base: nn.Module | None = self.make_base(model) if needs_base else None

    # ------------------------------------------------------------------ models
    @property
    def model(self) -> nn.Module:
        """The trained policy π (the owning module's current ``model`` when it set ``model_source``)."""
        return self.model_source() if self.model_source is not None else self._model

    @property
    def device(self) -> torch.device:
        if self._device is not None:
            return self._device()
        return next(self.model.parameters()).device

    def make_base(self, model: nn.Module) -> nn.Module:
        """The frozen prior ``a``: the policy with its adapters off (LoRA), else a frozen copy."""
        return lora_lib.AdapterDisabled(model) if lora_lib.is_lora(model) else self.frozen_copy(model)

    def frozen_copy(self, model: nn.Module) -> nn.Module:
        """A frozen snapshot of ``model``: a full copy (in ``frozen_dtype``), or with LoRA the
        adapter weights of the policy."""
        if model is self.model and lora_lib.is_lora(model):
            return lora_lib.AdapterSnapshot(model)
        dtype = self.settings.frozen_copy_dtype
        frozen = copy.deepcopy(model, cast_memo(model, getattr(torch, dtype)) if dtype else None)
        frozen.requires_grad_(False)
        frozen.eval()
        return frozen

    def refresh(self, snapshot: nn.Module) -> None:
        """Set a :meth:`frozen_copy` of the policy to the policy's current weights (q ← π)."""
        if isinstance(snapshot, lora_lib.AdapterSnapshot):
            snapshot.refresh()
        else:
            snapshot.load_state_dict(self.model.state_dict())

    def move_frozen(self, device: torch.device, *extra: nn.Module | None) -> None:
        """Put the base (and other frozen models, e.g. a proposal) on ``device``."""
        for m in (self.base, *extra):
            if m is not None:
                m.to(device)

    # ---------------------------------------------------------------- sampling
    @property
    def sampler(self):
        """What draws samples: the :class:`Policy` itself, or the vLLM engine (``sampler: vllm``)."""
        if self.settings.sampler == "native":
            return self.policy
        if self._vllm is None:
            from lit_align.models.vllm_sampler import VLLMSampler

            # the vLLM engine keeps the model's dtype unless sampler_kwargs set one (docs/scale.md)
            self._vllm = VLLMSampler(self.policy, self.settings.sampler_kwargs)
        return self._vllm

    def sample(self, contexts: Sequence[str], n: int, model: nn.Module | None = None) -> Samples:
        """``n`` completions per context from ``model`` (default the policy), rows grouped by context."""
        with self.timer("sampling"):
            model = model or self.model
            # a LoRA snapshot swaps its adapter weights in once for the whole sampling call
            swap = model.swapped() if isinstance(model, lora_lib.AdapterSnapshot) else contextlib.nullcontext()
            with swap, self.sampling_precision(model):
                samples = self.sampler.sample(model, list(contexts), n)
        # the prompt is prefilled once per context, each completion token decoded once
        self.timer.count("forward", samples.completion_mask.sum() + samples.prompt_mask.sum() // n)
        self.timer.samples += len(samples)
        return samples

    # --------------------------------------------------------------- log-probs
    def token_log_probs(self, model: nn.Module, samples: Samples) -> Tensor:
        """Per-token log-probs (B, Lc), float32, 0 off the completion: the one token log-prob function."""
        return self.policy.token_log_probs(model, samples)

    @torch.no_grad()
    def log_prob(self, model: nn.Module, samples: Samples) -> Tensor:
        """Sequence log-probs (B,) under ``model``, without gradients, in minibatches."""
        with self.timer("log_probs"):
            out = self.policy.log_prob(model, samples, self.settings.minibatch_size)
        self.timer.count("forward", samples.prompt_mask.sum() + samples.completion_mask.sum())
        return out

    def base_log_prob(self, samples: Samples) -> Tensor:
        """``log a`` of the samples."""
        return self.log_prob(self.base, samples)

    def policy_log_prob(self, samples: Samples) -> Tensor:
        """``log π`` of fresh policy samples: their sampled ``log_q`` when sampling is exact."""
        return samples.log_q if self.policy.exact else self.log_prob(self.model, samples)

    # --------------------------------------------------------------- precision
    @property
    def low_precision(self) -> bool:
        return self.settings.low_precision

    def autocast(self, dtype: str | None):
        """``torch.autocast`` in ``dtype`` on the engine's device; a no-op for None/float32."""
        if not dtype or dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=getattr(torch, dtype))

    def sampling_precision(self, model: nn.Module):
        """The precision of a sampling call: ``sample_dtype`` autocast, or with ``sample_cast_weights``
        the weights cast to ``sample_dtype`` once for the call (:func:`cast_weights`), where they can be."""
        dtype = self.settings.sample_dtype
        if self.settings.sample_cast_weights and dtype not in (None, "float32") and castable(model):
            return cast_weights(model, getattr(torch, dtype))
        return self.autocast(dtype)

    @property
    def train_attention(self) -> str | None:
        """The attention kernel of the gradient passes (None: the model's own): ``train_attention``,
        where ``auto`` is eager attention for bf16 gradient passes on CPU."""
        choice = self.settings.train_attention
        if choice == "auto":
            low = self.settings.grad_dtype not in (None, "float32")
            choice = "eager" if low and self.device.type == "cpu" else None
        return choice

    @contextlib.contextmanager
    def grad_autocast(self, model: nn.Module | None = None) -> Iterator[None]:
        """Context of the gradient passes' forward: autocast (``grad_dtype``) and the attention
        kernel (``train_attention``) of ``model`` (default the policy)."""
        with self.autocast(self.settings.grad_dtype), attention_implementation(model or self.model, self.train_attention):
            yield

    def backward_context(self):
        """Context of the backward: gradient checkpointing reruns the forward inside it, and the
        rerun must use the forward's attention kernel (autocast the checkpoint restores itself)."""
        return attention_implementation(self.model, self.train_attention)
