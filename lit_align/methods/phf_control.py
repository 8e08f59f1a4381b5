"""Where PHF's objective reaches the data stream and sampling (Korbak et al. 2023,
arXiv:2302.08582): the data module gets the tokenizer, filtering's document threshold and
conditional training's control tokens; when sampling, the prompt starts with ``<|aligned|>``
and no control token is ever emitted, so no generated text contains one."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from lit_align.data.pretraining import ControlTokens, PretrainingDataModule
from lit_align.models.blocked import blocked_tokens
from lit_align.models.policy import Samples


class ControlTokenMixin:
    """Mixin of :class:`lit_align.methods.PHF` (reads its ``hparams`` and ``tokenizer``).

    Args (of PHF):
        prompt_before_control: generation prompt ``EOS + prompt + <|aligned|>`` instead of
            ``EOS + <|aligned|> + prompt``.
        block_aligned_token: sampling blocks both control tokens (the paper's toxicity/PII
            setting); ``false`` blocks only ``<|misaligned|>`` (its PEP8 setting).
    """

    def connect_data(self, datamodule) -> None:
        if isinstance(datamodule, PretrainingDataModule):
            datamodule.connect(**self.pretraining_options())

    def pretraining_options(self) -> dict:
        """What the data module needs from the objective: the tokenizer, the document filter
        and the control tokens."""
        hp = self.hparams
        control = None
        if hp.objective == "conditional":
            aligned, misaligned = self.control_ids
            control = ControlTokens(aligned, misaligned, float(hp.threshold), float(hp.drop_token_fraction))
        return {"tokenizer": self.tokenizer, "control": control,
                "filter_threshold": float(hp.threshold) if hp.objective == "filtering" else None}

    @property
    def control_ids(self) -> list[int]:
        """Ids of ``<|aligned|>`` and ``<|misaligned|>`` (none unless the objective is conditional)."""
        if self.hparams.objective != "conditional":
            return []
        return self.tokenizer.convert_tokens_to_ids([self.hparams.aligned_token, self.hparams.misaligned_token])

    @property
    def blocked_control_ids(self) -> list[int]:
        """Control tokens that sampling never emits: both, or (the paper's code setting,
        ``block_aligned_token: false``) only ``<|misaligned|>``. Decoding drops them from texts."""
        ids = self.control_ids
        return ids if self.hparams.block_aligned_token else ids[1:]

    def generation_context(self, prompt: str = "") -> str:
        """The prompt the model is sampled from: conditional training puts ``<|aligned|>`` in it."""
        tok = self.tokenizer
        if self.hparams.objective != "conditional":
            return prompt
        starts_itself = bool(tok("a", add_special_tokens=True)["input_ids"][:1] == [tok.bos_token_id])
        eos = "" if starts_itself else (tok.eos_token or tok.bos_token or "")
        aligned = self.hparams.aligned_token
        return eos + (prompt + aligned if self.hparams.prompt_before_control else aligned + prompt)

    def sample(self, contexts: Sequence[str], n: int | None = None, model: nn.Module | None = None) -> Samples:
        """Samples whose texts never contain control tokens: they are blocked during sampling."""
        contexts = list(contexts)
        prompts = [self.generation_context(c) for c in contexts]
        with blocked_tokens(model or self.model, self.blocked_control_ids):
            samples = super().sample(prompts, n, model)
        samples.contexts = [contexts[i] for i in samples.context_index.tolist()]
        return samples
