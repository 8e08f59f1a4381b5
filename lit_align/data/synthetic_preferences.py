"""Synthetic preference data, for offline work and for checking the theory (the generative
model of Yun et al. 2025, arXiv:2506.01523).

Pairs ``a, b ~ μ(·|x)`` i.i.d. from a labelling LM μ, labelled by a Bradley–Terry model:

- from a target LM π* with temperature γ (Yun et al.'s generative model):
  ``P(a ≻ b) = σ(γ·(ln π*(a|x) − ln π*(b|x)))``;
- or from a scorer s: ``P(a ≻ b) = σ(scale·(s(a) − s(b)))``.

The preferred completion is drawn from that probability; the probability itself is kept
in the column ``chosen_probability`` (P(chosen ≻ rejected)). Records use TRL's standard
columns, so they can be written as JSONL and read back by :class:`PreferenceDataModule`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from lit_align.data.preference import PreferenceDataModule
from lit_align.preference import bt_probability
from lit_align.scorers.base import Scorer

SOFT_LABEL_COLUMN = "chosen_probability"


@torch.no_grad()
def synthesize_preferences(
    policy,
    labeller: nn.Module,
    prompts: Sequence[str],
    n_pairs: int,
    target_model: nn.Module | None = None,
    gamma: float = 1.0,
    scorer: Scorer | None = None,
    scale: float = 1.0,
    seed: int = 0,
    chunk: int = 64,
) -> list[dict]:
    """``n_pairs`` records ``{prompt, chosen, rejected, chosen_probability}`` (prompts used in turn).

    ``policy`` is a :class:`~lit_align.models.Policy` (tokenizer, sampling settings) shared by
    the labeller and the target LM. Give exactly one of ``target_model`` (with ``gamma``) or
    ``scorer`` (with ``scale``).
    """
    if (target_model is None) == (scorer is None):
        raise ValueError("synthesize_preferences: give exactly one of target_model (with gamma) or scorer")
    if gamma <= 0 or scale <= 0:
        raise ValueError(f"gamma and scale must be > 0, got {gamma} and {scale}")
    if n_pairs < 1 or not prompts:
        raise ValueError("synthesize_preferences: need n_pairs ≥ 1 and at least one prompt")
    prompts = list(prompts)
    per_prompt = [n_pairs // len(prompts) + (i < n_pairs % len(prompts)) for i in range(len(prompts))]
    gen = torch.Generator().manual_seed(seed)
    records: list[dict] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for prompt, count in zip(prompts, per_prompt):
            for start in range(0, count, chunk):
                k = min(chunk, count - start)
                s = policy.sample(labeller, [prompt], 2 * k)
                if target_model is not None:
                    score = policy.log_prob(target_model, s).double().cpu()
                    factor = gamma
                else:
                    score = scorer(s.texts, s.contexts).double().cpu()
                    factor = scale
                p_a = bt_probability(score[0::2], score[1::2], factor)
                a_wins = torch.bernoulli(p_a, generator=gen).bool()
                for j in range(k):
                    a, b = s.texts[2 * j], s.texts[2 * j + 1]
                    win = bool(a_wins[j])
                    records.append({"prompt": prompt, "chosen": a if win else b, "rejected": b if win else a,
                                    SOFT_LABEL_COLUMN: float(p_a[j] if win else 1 - p_a[j])})
    return records


def write_jsonl(records: Sequence[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: str | Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class SyntheticPreferenceDataModule(PreferenceDataModule):
    """Preference pairs generated at start-up from a labelling LM μ and a BT labeller.

    Args:
        prompts: contexts x (``""`` samples from BOS).
        n_pairs, n_val_pairs: training and validation pairs.
        labeller: μ as a model name for :func:`lit_align.models.load`; null: the method's
            frozen base π0 (the usual choice: pairs from the SFT model).
        labeller_seed: initialisation seed when ``labeller`` is a random model (``toy``, ``tiny-*``).
        target_model, target_seed, gamma: π* and γ of Yun et al.'s model (a model sharing
            the method's tokenizer; e.g. ``toy`` with another seed).
        scorer, scale: BT labels from a scorer instead of a target LM.
        output: write the generated pairs there (JSONL; validation pairs to ``*.val.jsonl``)
            with their settings (``*.settings.json``); a later run with the same settings reuses
            them (unless ``overwrite``), one with other settings generates them again.
        soft_label_column: the records' P(chosen ≻ rejected) column (kept: the labeller knows it).
        max_val_pairs: cap on validation pairs (default: all ``n_val_pairs``).
        Other arguments: as :class:`PreferenceDataModule` (``dataset`` is ignored).

    With a target LM, validation also logs KL(π*‖π) estimated on samples from π*.
    """

    def __init__(
        self,
        prompts: Sequence[str] = ("",),
        n_pairs: int = 1024,
        n_val_pairs: int = 64,
        labeller: str | None = None,
        labeller_seed: int = 0,
        target_model: str | None = None,
        target_seed: int = 1,
        gamma: float = 0.5,
        scorer: Scorer | None = None,
        scale: float = 1.0,
        output: str | None = None,
        overwrite: bool = False,
        soft_label_column: str | None = SOFT_LABEL_COLUMN,
        max_val_pairs: int | None = None,
        **kwargs,
    ) -> None:
        # declared here, not set with kwargs.setdefault: the CLI passes every parent argument
        # explicitly, with the parent's defaults (no soft labels, 64 validation pairs)
        kwargs.pop("dataset", None)  # the pairs are generated, never read from a dataset
        super().__init__(dataset="synthetic", soft_label_column=soft_label_column, max_val_pairs=max_val_pairs,
                         **kwargs)
        if (target_model is None) == (scorer is None):
            raise ValueError("SyntheticPreferenceDataModule: give exactly one of target_model or scorer")
        if n_pairs < 1 or n_val_pairs < 0:
            raise ValueError("n_pairs must be ≥ 1 and n_val_pairs ≥ 0")
        self.prompts = list(prompts) or [""]
        self.n_pairs, self.n_val_pairs = n_pairs, n_val_pairs
        self.labeller, self.labeller_seed = labeller, labeller_seed
        self.target_name, self.target_seed, self.gamma = target_model, target_seed, gamma
        self.scorer, self.scale = scorer, scale
        self.output, self.overwrite = output, overwrite
        self.target_model: nn.Module | None = None
        self._records: tuple[list[dict], list[dict]] | None = None

    @staticmethod
    def _load(name: str, seed: int, device) -> nn.Module:
        from lit_align.models.loading import load

        model, _ = load(name, seed=seed)
        model.requires_grad_(False)
        return model.eval().to(device)

    def generate(self, policy, base_model: nn.Module | None, device=None) -> tuple[list[dict], list[dict]]:
        """Training and validation records (read from ``output`` when it exists), sampled from
        the labeller μ (``base_model`` when ``labeller`` is null) with ``policy``'s settings."""
        val_path = None if self.output is None else Path(self.output).with_suffix(".val.jsonl")
        settings = self.settings(policy)
        if self.output and Path(self.output).is_file() and not self.overwrite:
            written = _read_settings(self.output)
            if written == settings:
                return read_jsonl(self.output), read_jsonl(val_path) if val_path.is_file() else []
            changed = sorted(k for k in settings if (written or {}).get(k) != settings[k])
            rank_zero_warn(f"{self.output} was written with other settings (differs in: {', '.join(changed)}); "
                           "generating the pairs again and overwriting it")
        if self.labeller is None:
            if base_model is None:
                raise ValueError("SyntheticPreferenceDataModule with labeller: null samples from the method's base "
                                 "model: connect(policy, base_model) needs it (or set `labeller`)")
            mu = base_model
        else:
            mu = self._load(self.labeller, self.labeller_seed, device)
        kw = dict(target_model=self.target_model, gamma=self.gamma, scorer=self.scorer, scale=self.scale)
        train = synthesize_preferences(policy, mu, self.prompts, self.n_pairs, seed=self.seed, **kw)
        val = synthesize_preferences(policy, mu, self.prompts, self.n_val_pairs, seed=self.seed + 1, **kw) \
            if self.n_val_pairs else []
        if self.output:
            write_jsonl(train, self.output)
            write_jsonl(val, val_path)
            _settings_path(self.output).write_text(json.dumps(settings, indent=1, sort_keys=True))
        return train, val

    def settings(self, policy) -> dict:
        """What the written pairs depend on: a cached ``output`` is reused only when these match."""
        scorer = self.scorer
        return {"prompts": self.prompts, "n_pairs": self.n_pairs, "n_val_pairs": self.n_val_pairs,
                "seed": self.seed, "labeller": self.labeller, "labeller_seed": self.labeller_seed,
                "target_model": self.target_name, "target_seed": self.target_seed, "gamma": self.gamma,
                "scorer": None if scorer is None else f"{type(scorer).__module__}.{type(scorer).__qualname__}"
                                                      f"({getattr(scorer, 'name', '')})",
                "scale": self.scale, "sampling": repr(getattr(policy, "settings", None))}

    def connect(self, policy, base_model: nn.Module | None = None) -> None:
        """Generate (or read back) the records with ``policy`` and the labeller μ (by default
        ``base_model``, the method's π0), then tokenise them (:meth:`PreferenceDataModule.connect`)."""
        if self.train_pairs is not None:
            return
        device = _device_of(base_model)
        if self.target_name is not None and self.target_model is None:
            self.target_model = self._load(self.target_name, self.target_seed, device)
        self._records = self.generate(policy, base_model, device)
        super().connect(policy, base_model)

    def load_split_records(self) -> tuple[list[dict], list[dict]]:
        if self._records is None:
            raise RuntimeError("SyntheticPreferenceDataModule: records are generated in connect(policy, base_model)")
        return self._records

    @torch.no_grad()
    def kl_target_policy(self, policy, model: nn.Module, prompts: Sequence[str], n: int,
                         batch_size: int | None = None) -> float:
        """KL(π*‖π) estimated on ``n`` samples of π* per prompt: mean(log π* − log π), with π
        the ``model`` sampled and scored through ``policy``."""
        if self.target_model is None:
            return math.nan
        s = policy.sample(self.target_model, list(prompts), n)
        log_pi = policy.log_prob(model, s, batch_size)
        return float((s.log_q.double() - log_pi.double()).mean())


def _settings_path(output: str | Path) -> Path:
    return Path(output).with_suffix(".settings.json")


def _read_settings(output: str | Path) -> dict | None:
    path = _settings_path(output)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # written before settings were recorded, or unreadable: regenerate


def _device_of(model: nn.Module | None) -> torch.device:
    device = getattr(model, "device", None)  # HF models and LoRA adapter views
    if isinstance(device, torch.device) or model is None:
        return device or torch.device("cpu")
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
