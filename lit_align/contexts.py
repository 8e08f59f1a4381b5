"""The context a completion is conditioned on: a bottom-floor type shared by data and scorers.

A data module emits contexts; scorers of conditional tasks (numeral or entity consistency,
compilability of a completed function) read the raw ``source`` a context was built from.
This module imports nothing of lit_align.
"""

from __future__ import annotations


class Context(str):
    """The prompt a model is conditioned on, carrying its ``source`` text and ``reference``.

    It *is* the prompt string (tokenizers and scorers that expect ``str`` work unchanged).
    """

    source: str
    reference: str | None

    def __new__(cls, prompt: str, source: str | None = None, reference: str | None = None) -> "Context":
        obj = super().__new__(cls, prompt)
        obj.source = str(prompt) if source is None else source
        obj.reference = reference
        return obj

    def __reduce__(self):
        return (Context, (str(self), self.source, self.reference))


def source_of(context: str | None) -> str:
    """The raw source text of a context (the prompt itself for a plain string)."""
    if context is None:
        return ""
    return getattr(context, "source", str(context))
