"""Pretraining with human feedback (Korbak et al. 2023, arXiv:2302.08582): six objectives on a
scored corpus, from scratch or fine-tuning a checkpoint.

The batches come from :class:`~lit_align.data.PretrainingDataModule` (chunks with per-token
misalignment scores), which the method connects to its tokenizer, document filter and control
tokens. The objectives are :class:`lit_align.phf_objectives.PHFObjective`; choices where the
released code is ambiguous are in docs/phf.md.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from lit_align import phf_losses
from lit_align.masked import masked_mean
from lit_align.methods.offline import OfflineModule
from lit_align.methods.phf_control import ControlTokenMixin
from lit_align.methods.stepping import even_chunks
from lit_align.models.logprobs import selected_log_probs
from lit_align.models.phf_init import initial_model
from lit_align.phf_objectives import PHFObjective


class PHF(ControlTokenMixin, OfflineModule):
    """One module, six objectives (``objective:``).

    Args:
        objective: ``mle``, ``filtering``, ``conditional``, ``unlikelihood``, ``rwr`` or ``awr``.
        threshold: misalignment threshold: documents (filtering, on ``avg_score``), segments
            (conditional: ``<|aligned|>`` iff ``score ≤ threshold``) or tokens (unlikelihood).
        drop_token_fraction: conditional training: segments left without a control token.
        alpha, temperature, ul_mode, rwr_baseline, max_weight: the objective's settings
            (:class:`lit_align.phf_objectives.PHFObjective`; ``temperature`` is RWR/AWR's β).
        from_scratch: random initialisation from the model's config (``config_overrides``
            changes it, e.g. ``{n_layer: 4}``); else the model's weights.
        init_from: a Lightning checkpoint (``.ckpt``) whose ``model.*`` weights start the run.
        aligned_token, misaligned_token, control_init_std: conditional training's control tokens
            (new embeddings = mean embedding + N(0, control_init_std²)).
        prompt_before_control, block_aligned_token: the generation prompt and the blocked control
            tokens (:class:`lit_align.methods.phf_control.ControlTokenMixin`).
        lr_schedule, warmup_ratio: the LR after warm-up (:func:`lit_align.schedules.lr_factor`).
        lora: LoRA adapters on the loaded or ``init_from`` weights (not with ``from_scratch``);
            the control tokens' new embeddings then keep their seeded initialisation.
        Other arguments: :class:`~lit_align.methods.offline.OfflineModule` (exact sampling).
    """

    needs_base = False

    def __init__(self, objective: str = "mle", threshold: float | None = None, drop_token_fraction: float = 0.01,
                 alpha: float = 1.0, temperature: float = 1.0, ul_mode: str = "hard", rwr_baseline: float = 0.0,
                 max_weight: float = 1000.0, from_scratch: bool = False, config_overrides: dict | None = None,
                 init_from: str | None = None, aligned_token: str = "<|aligned|>",
                 misaligned_token: str = "<|misaligned|>", control_init_std: float = 0.01,
                 prompt_before_control: bool = False, lr_schedule: str = "linear", warmup_ratio: float = 0.0,
                 block_aligned_token: bool = True, **kwargs) -> None:
        if from_scratch and kwargs.get("lora") is not None:
            raise ValueError("PHF: `lora:` trains adapters on pretrained weights; with from_scratch: true there are "
                             "none (remove `lora:`, or set from_scratch: false / init_from a checkpoint)")
        super().__init__(**kwargs)
        self.objective = PHFObjective(objective, threshold, alpha, temperature, ul_mode, rwr_baseline, max_weight)
        if not 0.0 <= drop_token_fraction <= 1.0:
            raise ValueError(f"drop_token_fraction must be in [0, 1], got {drop_token_fraction}")
        if init_from is not None and not Path(init_from).is_file():
            raise FileNotFoundError(f"init_from: checkpoint {init_from!r} does not exist")
        self.value_head: nn.Parameter | None = None  # AWR's, built with the models
        self.tokens_seen = 0

    # ------------------------------------------------------------ models, data
    def load_models(self) -> tuple[nn.Module, object]:
        """The model (from scratch, from a checkpoint, with control tokens) and its tokenizer;
        the engine applies LoRA, dropout-off and gradient checkpointing to it."""
        hp = self.hparams
        control = [hp.aligned_token, hp.misaligned_token] if hp.objective == "conditional" else []
        return initial_model(hp.model, hp.tokenizer, hp.model_seed, hp.from_scratch, hp.config_overrides, hp.init_from,
                             control, hp.control_init_std)

    def on_models_ready(self) -> None:
        if self.objective.needs_hidden:  # AWR's V = −sigmoid(w·h), w zero-initialised, no bias
            self.value_head = nn.Parameter(torch.zeros(self.model.config.hidden_size))

    def optimized_parameters(self):
        return list(self.model.parameters()) + ([self.value_head] if self.value_head is not None else [])

    # ---------------------------------------------------------------- training
    def token_log_probs(self, input_ids: Tensor, attention_mask: Tensor, hidden: bool = False):
        """Log-probs (B, L−1) of tokens 1..L−1 and, with ``hidden``, the last hidden state at
        the position predicting each of them (B, L−1, H)."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=hidden,
                         use_cache=False)
        h = out.hidden_states[-1][:, :-1] if hidden else None
        return selected_log_probs(out.logits[:, :-1], input_ids[:, 1:]), h

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        ids, attn, scores = batch["input_ids"], batch["attention_mask"], batch["token_scores"].float()
        mask = attn[:, 1:].float()
        n_tokens = mask.sum().clamp(min=1)
        totals: dict[str, Tensor] = {}

        def loss_of(rows: slice) -> Tensor:
            with self.engine.grad_autocast():
                logp, h = self.token_log_probs(ids[rows], attn[rows], hidden=self.objective.needs_hidden)
            terms = self.objective.terms(logp, scores[rows, 1:], mask[rows], h.float() if h is not None else None,
                                         self.value_head)
            self.timer.count("train", attn[rows].sum())
            for k, v in terms.items():
                totals[k] = totals.get(k, 0.0) + v.detach().double()
            return terms["loss"] / n_tokens

        # weight 1: each minibatch's summed loss is already divided by the whole batch's tokens
        self.accumulate_backward(((rows, 1.0) for rows, _ in even_chunks(len(ids), self.hparams.minibatch_size)),
                                 loss_of)
        self.optimizer_step_guarded()
        trainer = self.attached_trainer
        self.tokens_seen += int(attn.sum()) * (trainer.world_size if trainer is not None else 1)
        metrics = {k: v / n_tokens for k, v in totals.items()}
        metrics["tokens_seen"] = float(self.tokens_seen)
        metrics["misalignment"] = masked_mean(scores[:, 1:], mask)
        n_params = sum(p.numel() for p in self.model.parameters())
        metrics["theoretical_loss"] = phf_losses.theoretical_loss(n_params, self.tokens_seen)
        self.log_metrics(metrics, "train")
        return metrics["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """LM loss on held-out chunks (control tokens, when any, are not scored as targets)."""
        ids, attn = batch["input_ids"], batch["attention_mask"]
        logp, _ = self.token_log_probs(ids, attn)
        mask = attn[:, 1:].float()
        for cid in self.control_ids:
            mask = mask * (ids[:, 1:] != cid)
        self.log("val/loss", phf_losses.mle_loss(logp, mask, "mean"), on_step=False, on_epoch=True, sync_dist=True,
                 batch_size=int(mask.sum().clamp(min=1)))

    def extra_state(self) -> dict:
        return {"tokens_seen": self.tokens_seen}

    def load_extra_state(self, state: dict) -> None:
        self.tokens_seen = int(state.get("tokens_seen", 0))
