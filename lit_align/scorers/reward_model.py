"""A Bradley–Terry reward model (an LM with a scalar head) used as a scorer (Yun et al. 2025, arXiv:2506.01523, eq. 9).

``sequence_rewards`` is the forward pass shared by training (:class:`lit_align.methods.RewardModel`)
and scoring: the scalar head reads the last layer's hidden state at the last completion token
(EOS included), as in Ouyang et al.'s reward models. A trained model is saved as a folder
(``save_reward_model``) and loaded by :class:`RewardModelScorer`, which then works anywhere a
scorer does: a reward for RL with KL / RLOO / PPO, ``base * RewardTilt(rm, temperature)`` for DPG,
soft labels for preference distillation, a judge for win rates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from lit_align.scorers.base import Scorer

META = "reward_model.json"


def last_hidden(model: nn.Module, samples) -> Tensor:
    """Final hidden state (B, H) after the last completion token of each row (causal LMs only)."""
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        raise ValueError("reward models here are causal LMs with a scalar head; encoder-decoder models are not supported")
    ids = torch.cat([samples.prompt_ids, samples.completion_ids], dim=1)
    mask = torch.cat([samples.prompt_mask, samples.completion_mask], dim=1)
    trunk = getattr(model, "base_model", None)
    if trunk is not None and trunk is not model:
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        h = trunk(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
    else:  # e.g. the toy LM, which returns its hidden states itself
        h = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
    last = samples.prompt_ids.shape[1] + samples.completion_mask.sum(-1) - 1
    return h[torch.arange(h.shape[0], device=h.device), last]


def sequence_rewards(model: nn.Module, head: nn.Linear, samples) -> Tensor:
    """R(x, y) of each row: ``head(last hidden state)`` (float32, with grad if the inputs have it)."""
    h = last_hidden(model, samples)
    return head(h.to(head.weight.dtype)).squeeze(-1).float()


def save_reward_model(folder: str | Path, model: nn.Module, head: nn.Linear, tokenizer, meta: dict) -> Path:
    """Write ``model/`` (save_pretrained) or ``model.pt`` (+ the base name in the metadata), ``head.pt``
    and ``reward_model.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = dict(meta)
    if hasattr(model, "save_pretrained") and hasattr(tokenizer, "save_pretrained"):
        model.save_pretrained(folder / "model")
        tokenizer.save_pretrained(folder / "model")
        meta["weights"] = "model"
    else:
        if not meta.get("base"):
            raise ValueError("save_reward_model: a model without save_pretrained needs meta['base'] (its load() name)")
        torch.save(model.state_dict(), folder / "model.pt")
        meta["weights"] = "model.pt"
    torch.save(head.state_dict(), folder / "head.pt")
    (folder / META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return folder


def load_reward_model(path: str | Path, seed: int = 0) -> tuple[nn.Module, nn.Linear, object, dict]:
    """``(model, head, tokenizer, meta)`` from a saved folder, or from a model name for
    :func:`lit_align.models.load` with a random head (smoke tests: ``tiny-gpt2``, ``toy``)."""
    from lit_align.models.value_head import hidden_size
    from lit_align.models.loading import load

    folder = Path(path).expanduser()
    if (folder / META).is_file():
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
        if meta.get("weights") == "model":
            model, tok = load(str(folder / "model"))
        else:
            model, tok = load(meta["base"], seed=meta.get("model_seed", 0))
            model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
        head = nn.Linear(hidden_size(model), 1)
        head.load_state_dict(torch.load(folder / "head.pt", weights_only=True))
    elif folder.exists():
        raise FileNotFoundError(f"{str(folder)!r} is not a saved reward model (no {META}); "
                                "train one with lit_align.methods.RewardModel (configs/reward_model_*.yaml)")
    else:
        from lit_align.models.loading import ModelLoadError

        try:
            model, tok = load(str(path), seed=seed)
        except ModelLoadError as err:
            raise FileNotFoundError(
                f"no saved reward model at {str(path)!r}: train one first with lit_align.methods.RewardModel "
                "(e.g. configs/reward_model_tldr.yaml writes runs/reward_model_tldr/reward_model)") from err
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = nn.Linear(hidden_size(model), 1)
        meta = {}
    model.requires_grad_(False).eval()
    head.requires_grad_(False)
    return model, head, tok, meta


class RewardModelScorer(Scorer):
    """R̂(x, c) from a trained Bradley–Terry reward model (a folder written by ``RewardModel``).

    Args:
        path: the saved folder (or a model name for a random reward model, for smoke tests).
        batch_size: texts per forward pass.
        device: where the reward model runs (``cpu``, ``cuda``; ``auto``: CUDA when available).
        scale: multiply the rewards (e.g. 1/β for a tilt written as a scorer).
        max_prompt_length: keep the last tokens of longer prompts (default: as in training).
    """

    def __init__(self, path: str, batch_size: int = 16, device: str = "auto", scale: float = 1.0,
                 max_prompt_length: int | None = None, name: str | None = None) -> None:
        super().__init__(name or "reward_model")
        from lit_align.models.policy import Policy

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model, self.head, self.tokenizer, meta = load_reward_model(path)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.to(device)
        self.head.to(device)
        self.device, self.batch_size, self.scale = device, batch_size, scale
        self.append_eos = meta.get("append_eos", True)
        self.policy = Policy(self.tokenizer, 1, chat_template=meta.get("chat_template", False),
                             max_prompt_length=max_prompt_length or meta.get("max_prompt_length"))

    @torch.no_grad()
    def score(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> Tensor:
        from lit_align.models.samples import pad_samples

        contexts = list(contexts) if contexts is not None else [""] * len(texts)
        eos = [self.policy.eos_id] if self.append_eos and self.policy.eos_id is not None else []
        out = []
        for start in range(0, len(texts), self.batch_size):
            t, c = list(texts[start:start + self.batch_size]), contexts[start:start + self.batch_size]
            prompts = [self.policy.encode_context(x) for x in c]
            comps = [list(self.tokenizer(x, add_special_tokens=False)["input_ids"]) + eos for x in t]
            comps = [r if r else [self.policy.pad_id] for r in comps]
            s = pad_samples(prompts, comps, self.policy.pad_id, t, c)
            s.prompt_ids, s.prompt_mask = s.prompt_ids.to(self.device), s.prompt_mask.to(self.device)
            s.completion_ids, s.completion_mask = s.completion_ids.to(self.device), s.completion_mask.to(self.device)
            out.append(sequence_rewards(self.model, self.head, s).double().cpu())
        return torch.cat(out) * self.scale
