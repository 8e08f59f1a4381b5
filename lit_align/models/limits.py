"""The context length of a causal LM, and refusing prompts that do not fit in it.

A prompt of ``L`` tokens followed by ``max_new_tokens`` needs ``L + max_new_tokens`` positions;
past the model's limit a model with learned positions (GPT-2) fails with an index error deep
in its forward, and one with rotary positions extrapolates silently. lit_align refuses instead,
naming the setting that truncates prompts (``max_prompt_length``, which keeps the last tokens
with a warning). See docs/bad_inputs.md.
"""

from __future__ import annotations

from torch import nn

_POSITION_FIELDS = ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length", "seq_length")


def context_limit(model: nn.Module) -> int | None:
    """Positions a causal LM can attend over (None: no known limit, e.g. encoder-decoders, the toy LM)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return None
    for name in _POSITION_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_prompt_fits(model: nn.Module, prompt_tokens: int, max_new_tokens: int) -> None:
    """Raise ValueError when ``prompt_tokens + max_new_tokens`` exceeds the model's context."""
    limit = context_limit(model)
    if limit is None or prompt_tokens + max_new_tokens <= limit:
        return
    room = limit - max_new_tokens
    fix = (f"set max_prompt_length: {room} (longer prompts keep their last {room} tokens, with a warning)"
           if room > 0 else f"lower max_new_tokens below {limit}")
    raise ValueError(
        f"a prompt of {prompt_tokens} tokens plus max_new_tokens={max_new_tokens} needs "
        f"{prompt_tokens + max_new_tokens} positions, more than the model's context of {limit}: {fix}, "
        "or shorten the prompts"
    )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive_int(name: str, value, allow_none: bool = False, minimum: int = 1) -> None:
    """Refuse anything but an integer ≥ ``minimum`` (or None when allowed), naming the setting."""
    if value is None and allow_none:
        return
    if not _is_int(value) or value < minimum:
        extra = " or null" if allow_none else ""
        raise ValueError(f"{name} must be an integer ≥ {minimum}{extra}, got {value!r}")
