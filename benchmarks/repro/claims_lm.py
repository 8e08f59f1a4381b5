"""Claims on language models (SmolLM2, small GPT-2 from scratch) and Yun et al.'s toy."""

from __future__ import annotations


def claims() -> list:
    return []
