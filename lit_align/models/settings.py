"""The settings of an :class:`~lit_align.models.engine.Engine`, declared and checked once.

:class:`SamplingSettings` is what the sampler needs (length cap, warps, prompt handling);
:class:`EngineSettings` adds which model to load and the precision of each pass. Both check
their fields when built, before any model is loaded, and name the field that is wrong.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from lit_align.models.attention import IMPLEMENTATIONS
from lit_align.models.limits import check_positive_int

DTYPES = (None, "float32", "bfloat16", "float16")


@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this machine multiplies bf16 matrices natively: a CUDA GPU with bf16, or a CPU
    with AVX512-BF16, AMX-BF16 or Arm's BF16 extension (read from ``/proc/cpuinfo``; elsewhere,
    e.g. macOS, a CPU counts as without). Without it, bf16 autocast on a CPU is emulated and
    slower than fp32."""
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16|bf16)\b", info) is not None


def resolve_dtype(value: str | None) -> str | None:
    """``auto`` → ``bfloat16`` where :func:`native_bf16`, else None (the model's fp32); other values as given."""
    if value != "auto":
        return value
    return "bfloat16" if native_bf16() else None


@dataclass(frozen=True)
class SamplingSettings:
    """How completions are drawn.

    Args:
        max_new_tokens: completion length cap.
        temperature, top_k, top_p: sampling warps; the defaults are exact ancestral sampling.
        chat_template: wrap each context as a user turn with the tokenizer's chat template.
        max_prompt_length: longer prompts keep their last tokens (with a warning).
    """

    max_new_tokens: int = 40
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    chat_template: bool = False
    max_prompt_length: int | None = None

    def __post_init__(self) -> None:
        check_positive_int("max_new_tokens", self.max_new_tokens)
        check_positive_int("max_prompt_length", self.max_prompt_length, allow_none=True)
        t = self.temperature
        if not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise ValueError(f"temperature must be > 0, got {t}")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise ValueError(f"top_k must be ≥ 0 (0 = off), got {self.top_k}")

    @property
    def exact(self) -> bool:
        """Pure ancestral sampling: the sampled log-probs are the model's own."""
        return self.temperature == 1.0 and self.top_k == 0 and self.top_p == 1.0

    @classmethod
    def from_mapping(cls, values) -> "SamplingSettings":
        """The sampling fields of a larger mapping (e.g. a module's hparams)."""
        return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})


@dataclass(frozen=True)
class EngineSettings:
    """Which model an engine loads and how it computes (see :class:`~lit_align.methods.on_policy.OnPolicyModule` for each field)."""

    model: str = "smollm2"
    tokenizer: str | None = None
    model_seed: int = 0
    minibatch_size: int = 8
    gradient_checkpointing: bool = False
    lora: dict | None = None
    frozen_dtype: str | None = None
    sampler: str = "native"
    sampler_kwargs: dict | None = None
    grad_dtype: str | None = None
    sample_dtype: str | None = None
    sample_cast_weights: bool = False
    train_attention: str | None = "auto"
    sampling: SamplingSettings = field(default_factory=SamplingSettings)

    def __post_init__(self) -> None:
        check_positive_int("minibatch_size", self.minibatch_size)
        for name in ("frozen_dtype", "grad_dtype", "sample_dtype"):
            value = getattr(self, name)
            if value not in DTYPES and value != "auto":
                raise ValueError(f"{name} must be null, float32, bfloat16, float16 or auto, got {value!r}")
        if not isinstance(self.sample_cast_weights, bool):
            raise ValueError(f"sample_cast_weights must be true or false, got {self.sample_cast_weights!r}")
        if self.sample_cast_weights and self.sample_dtype in (None, "float32"):
            raise ValueError("sample_cast_weights: true casts the weights to sample_dtype for sampling; set "
                             f"sample_dtype to bfloat16, float16 or auto (got {self.sample_dtype!r})")
        for name in ("grad_dtype", "sample_dtype"):  # auto: bf16 only where it is fast (native_bf16)
            object.__setattr__(self, name, resolve_dtype(getattr(self, name)))
        if self.train_attention not in (None, "auto", *IMPLEMENTATIONS):
            raise ValueError(f"train_attention must be null, auto or one of {', '.join(IMPLEMENTATIONS)}, "
                             f"got {self.train_attention!r}")
        if self.sampler not in ("native", "vllm"):
            raise ValueError(f"sampler must be 'native' or 'vllm', got {self.sampler!r}")
        if self.sampler == "vllm":
            from lit_align.models.vllm_check import require_vllm

            require_vllm()
        if self.lora is not None:
            from lit_align.models import lora as lora_lib

            lora_lib.require_peft()  # a clear error now rather than after loading the model

    @property
    def frozen_copy_dtype(self) -> str | None:
        """The dtype of frozen full copies (base, proposal): ``frozen_dtype``, where ``auto`` is
        ``grad_dtype`` when the gradient passes run in lower precision (a bf16-trained policy
        gets a bf16 base: half its memory, a ~3× faster base pass on CPU) and the policy's own dtype otherwise."""
        if self.frozen_dtype != "auto":
            return self.frozen_dtype
        return self.grad_dtype if self.grad_dtype not in (None, "float32") else None

    @property
    def low_precision(self) -> bool:
        """Gradient passes or sampling in lower precision: on-policy weights then use the sampled
        ``log_q`` for q (the exact density of what was sampled), never a forward of another precision."""
        return any(v not in (None, "float32") for v in (self.grad_dtype, self.sample_dtype))

    @classmethod
    def from_mapping(cls, values) -> "EngineSettings":
        """The engine's fields of a larger mapping (e.g. a module's hparams)."""
        fields = {k: values[k] for k in cls.__dataclass_fields__ if k != "sampling" and k in values}
        return cls(**fields, sampling=SamplingSettings.from_mapping(values))

    def as_dict(self) -> dict:
        return asdict(self)
