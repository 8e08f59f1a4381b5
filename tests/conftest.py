"""Shared fixtures for the offline test suite (tiny random models, the toy LM, in-process CLI runs)."""

from __future__ import annotations

import os

# Set before anything imports huggingface_hub/tokenizers: they read these once, at import.
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

TINY_NAMES = ("tiny-gpt2", "tiny-llama", "tiny-t5")
MODEL_NAMES = TINY_NAMES + ("toy",)

# Trainer flags that keep in-process CLI runs quiet and fast.
QUIET = [
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test inside its own temporary working directory (relative log dirs land there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def add_eos_bias(model: nn.Module, eos_id: int, bias: float) -> nn.Module:
    """Give the LM head a bias that raises the EOS logit by ``bias`` (weights stay shared).

    Random tiny models put ~1/258 of their mass on EOS; this makes completions end early
    often enough to test EOS handling, and it changes the model for sampling and scoring alike.
    """
    head = model.get_output_embeddings()
    new = nn.Linear(head.in_features, head.out_features, bias=True)
    new.weight = head.weight
    with torch.no_grad():
        new.bias.zero_()
        new.bias[eos_id] = bias
    model.set_output_embeddings(new)
    return model


@pytest.fixture(scope="session")
def make_model():
    """``make_model(name, eos_bias=0.0) -> (model, tokenizer)``: a fresh tiny/toy model in eval mode."""
    from lit_align.models import load

    def make(name: str, eos_bias: float = 0.0, seed: int = 0):
        model, tok = load(name, seed=seed)
        if eos_bias:
            add_eos_bias(model, tok.eos_token_id, eos_bias)
        model.eval()
        return model, tok

    return make


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch):
    """``run_cli(*args)``: ``lit_align.cli.main`` in-process (the subcommand runs), quiet trainer."""
    from lit_align.cli import main

    monkeypatch.setattr("sys.argv", ["lit_align"])  # pytest's own argv is not for LightningCLI

    def run(*args: str):
        args = list(args)
        extra = QUIET if args and args[0] in ("fit", "validate", "test", "predict") and "--print_config" not in args else []
        return main(args + extra)

    return run


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's tiny tensor work on one thread (much faster on a busy 2-core machine)."""
    from toy_exact import torch_threads

    with torch_threads(1):
        yield
