"""Pretraining with human feedback (Korbak et al. 2023; methods.md §5): six objectives on a
scored corpus, from scratch or fine-tuning a checkpoint.

The batches come from :class:`~lit_align.data.PretrainingDataModule` (chunks with per-token
misalignment scores). MLE, filtering and conditional training are MLE on differently built
streams (filtering drops documents, conditional training adds control tokens: the data
module gets them through its ``connect``); unlikelihood, RWR and AWR weight the tokens
(:mod:`lit_align.phf_losses`). Choices where the released code is ambiguous are in docs/phf.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from lit_align import phf_losses
from lit_align.data.pretraining import ControlTokens, PretrainingDataModule
from lit_align.methods.offline import OfflineModule
from lit_align.methods.stepping import even_chunks
from lit_align.models.blocked import blocked_tokens
from lit_align.models.logprobs import selected_log_probs
from lit_align.models.loading import SMOLLM2_ALIASES, TINY_MODELS, ModelLoadError, hub_reachable, load
from lit_align.models.policy import Samples

OBJECTIVES = ("mle", "filtering", "conditional", "unlikelihood", "rwr", "awr")


class PHF(OfflineModule):
    """One module, six objectives (``objective:``), methods.md §5.2.

    Args:
        objective: ``mle``, ``filtering``, ``conditional``, ``unlikelihood``, ``rwr`` or ``awr``.
        threshold: misalignment threshold: documents (filtering, on ``avg_score``), segments
            (conditional: ``<|aligned|>`` iff ``score ≤ threshold``) or tokens (unlikelihood).
        drop_token_fraction: conditional training: segments left without a control token.
        alpha: unlikelihood weight (UL); weight of the LM term vs the value loss (AWR).
        temperature: β of the RWR/AWR weights ``exp(A/β)`` (Peng et al. 2019, arXiv:1910.00177,
            eq. 7; Korbak et al. 2023, arXiv:2302.08582, §2). Samples drawn by the module itself
            are exact ancestral samples; evaluation's sampling settings are the callback's.
        ul_mode: ``hard`` (default; the paper), ``soft`` or ``released`` (the released code's
            falsy-threshold quirk), see :func:`lit_align.phf_losses.ul_aligned_weight`.
        rwr_baseline: the constant value RWR subtracts (0: textbook; −0.5: the released code).
        max_weight: clamp of the RWR/AWR weights.
        from_scratch: random initialisation from the model's config (``config_overrides``
            changes it, e.g. ``{n_layer: 4}``); else the model's weights.
        init_from: a Lightning checkpoint (``.ckpt``) whose ``model.*`` weights start the
            run (fine-tuning an MLE-pretrained model with feedback).
        aligned_token, misaligned_token: conditional training's control tokens (added to
            the tokenizer; new embeddings = mean embedding + N(0, control_init_std²)).
        prompt_before_control: generation prompt ``EOS + prompt + <|aligned|>`` instead of
            ``EOS + <|aligned|> + prompt``.
        block_aligned_token: sampling blocks both control tokens (default, the paper's
            toxicity/PII setting); ``false`` blocks only ``<|misaligned|>`` (its PEP8 setting).
        lr_schedule: ``linear`` (warm-up then linear decay to 0 at ``max_steps``, the HF
            Trainer default of the paper) or ``constant`` (warm-up only).
        warmup_ratio: warm-up steps as a fraction of ``max_steps`` (used when
            ``warmup_steps`` is 0).
        lora: train LoRA adapters (Hu et al. 2021, arXiv:2106.09685) on the loaded or
            ``init_from`` weights instead of all weights (see :class:`BasePolicyModule`); the
            control tokens' new embeddings then stay at their (seeded) initialisation.
            Not with ``from_scratch``.
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
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if objective in ("filtering", "conditional", "unlikelihood") and threshold is None:
            raise ValueError(f"objective {objective!r} needs a `threshold` (misalignment score; the paper's are in "
                             "methods.md §5.3)")
        if not 0.0 <= drop_token_fraction <= 1.0:
            raise ValueError(f"drop_token_fraction must be in [0, 1], got {drop_token_fraction}")
        if objective == "awr" and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"AWR's alpha must be in [0, 1], got {alpha}")
        if objective in ("rwr", "awr") and temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if ul_mode not in ("hard", "soft", "released"):
            raise ValueError(f"ul_mode must be 'hard', 'soft' or 'released', got {ul_mode!r}")
        if lr_schedule not in ("linear", "constant"):
            raise ValueError(f"lr_schedule must be 'linear' or 'constant', got {lr_schedule!r}")
        if init_from is not None and not Path(init_from).is_file():
            raise FileNotFoundError(f"init_from: checkpoint {init_from!r} does not exist")
        self.value_head: nn.Parameter | None = None
        self.tokens_seen = 0

    # ------------------------------------------------------------------ models
    def load_models(self) -> tuple[nn.Module, object]:
        """The model (from scratch, from a checkpoint, with control tokens) and its tokenizer;
        the engine applies LoRA, dropout-off and gradient checkpointing to it."""
        hp = self.hparams
        if hp.from_scratch:
            model, tok = random_model(hp.model, hp.tokenizer, hp.config_overrides or {}, hp.model_seed)
        else:
            if hp.config_overrides:
                raise ValueError("config_overrides apply only with from_scratch: true")
            model, tok = load(hp.model, hp.tokenizer, seed=hp.model_seed)
        if hp.init_from:
            load_checkpoint_weights(model, hp.init_from)
        if hp.objective == "conditional":
            add_control_tokens(model, tok, [hp.aligned_token, hp.misaligned_token], hp.control_init_std, hp.model_seed)
        return model, tok

    def on_models_ready(self) -> None:
        if self.hparams.objective == "awr":
            # V = −sigmoid(w·h), w zero-initialised, no bias (Korbak et al. 2023, arXiv:2302.08582, §2)
            self.value_head = nn.Parameter(torch.zeros(self.model.config.hidden_size))

    def connect_data(self, datamodule) -> None:
        if isinstance(datamodule, PretrainingDataModule):
            datamodule.connect(**self.pretraining_options())

    def optimized_parameters(self):
        params = list(self.model.parameters())
        return params + ([self.value_head] if self.value_head is not None else [])

    @property
    def control_ids(self) -> list[int]:
        if self.hparams.objective != "conditional":
            return []
        return self.tokenizer.convert_tokens_to_ids([self.hparams.aligned_token, self.hparams.misaligned_token])

    @property
    def blocked_control_ids(self) -> list[int]:
        """Control tokens that sampling never emits: both, or (the paper's code setting,
        ``block_aligned_token: false``) only ``<|misaligned|>``. Decoding drops them from texts."""
        ids = self.control_ids
        return ids if self.hparams.block_aligned_token else ids[1:]

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

    # ------------------------------------------------------------- optimizers
    def configure_optimizers(self):
        cfg = super().configure_optimizers()
        hp = self.hparams
        max_steps = self.trainer.max_steps if self.attached_trainer is not None else -1
        warmup = int(hp.warmup_steps) or (int(hp.warmup_ratio * max_steps) if max_steps and max_steps > 0 else 0)
        total = max_steps if hp.lr_schedule == "linear" and max_steps and max_steps > 0 else None

        def factor(step: int) -> float:
            if warmup and step < warmup:
                return (step + 1) / (warmup + 1)
            if total is None:
                return 1.0
            return max(0.0, (total - step) / max(1, total - warmup))

        cfg["lr_scheduler"]["scheduler"] = torch.optim.lr_scheduler.LambdaLR(cfg["optimizer"], factor)
        return cfg

    # ---------------------------------------------------------------- training
    def token_log_probs(self, input_ids: Tensor, attention_mask: Tensor, hidden: bool = False):
        """Log-probs (B, L−1) of tokens 1..L−1 and, with ``hidden``, the last hidden state at
        the position predicting each of them (B, L−1, H)."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=hidden,
                         use_cache=False)
        logp = selected_log_probs(out.logits[:, :-1], input_ids[:, 1:])
        h = out.hidden_states[-1][:, :-1] if hidden else None
        return logp, h

    def objective_terms(self, logp: Tensor, scores: Tensor, mask: Tensor, hidden: Tensor | None) -> dict[str, Tensor]:
        """Summed loss (and diagnostics) of one minibatch; the caller divides by the batch's tokens."""
        hp = self.hparams
        obj = hp.objective
        out = {"original_loss": phf_losses.mle_loss(logp.detach(), mask, "sum")}
        if obj in ("mle", "filtering", "conditional"):
            out["loss"] = phf_losses.mle_loss(logp, mask, "sum")
        elif obj == "unlikelihood":
            out["loss"] = phf_losses.unlikelihood_loss(logp, scores, mask, float(hp.threshold), hp.alpha, hp.ul_mode, "sum")
        elif obj == "rwr":
            out["loss"] = phf_losses.rwr_loss(logp, scores, mask, hp.temperature, hp.rwr_baseline, hp.max_weight, "sum")
            out["weight"] = (phf_losses.awr_weights(-scores, hp.rwr_baseline, hp.temperature, hp.max_weight) * mask).sum()
        else:
            values = phf_losses.value_from_hidden(hidden.float(), self.value_head)
            out["loss"] = phf_losses.awr_loss(logp, scores, values, mask, hp.alpha, hp.temperature, hp.max_weight, "sum")
            out["value_loss"] = (((values - (-scores)) ** 2) * mask).sum().detach()
            out["value"] = (values * mask).sum().detach()
            out["weight"] = (phf_losses.awr_weights(-scores, values, hp.temperature, hp.max_weight) * mask).sum()
        return out

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        ids, attn, scores = batch["input_ids"], batch["attention_mask"], batch["token_scores"].float()
        mask = attn[:, 1:].float()
        n_tokens = mask.sum().clamp(min=1)
        totals: dict[str, Tensor] = {}

        def loss_of(rows: slice) -> Tensor:
            with self.engine.grad_autocast():
                logp, h = self.token_log_probs(ids[rows], attn[rows], hidden=self.hparams.objective == "awr")
            terms = self.objective_terms(logp, scores[rows, 1:], mask[rows], h.float() if h is not None else None)
            self.timer.count("train", attn[rows].sum())
            for k, v in terms.items():
                totals[k] = totals.get(k, 0.0) + v.detach().double()
            return terms["loss"] / n_tokens

        # weight 1: each minibatch's summed loss is already divided by the whole batch's tokens
        chunks = ((rows, 1.0) for rows, _ in even_chunks(ids.shape[0], self.hparams.minibatch_size))
        self.accumulate_backward(chunks, loss_of)
        self.optimizer_step_guarded()
        trainer = self.attached_trainer
        self.tokens_seen += int(attn.sum()) * (trainer.world_size if trainer is not None else 1)
        metrics = {k: v / n_tokens for k, v in totals.items()}
        metrics["tokens_seen"] = float(self.tokens_seen)
        metrics["misalignment"] = (scores[:, 1:] * mask).sum() / n_tokens
        n_params = sum(p.numel() for p in self.model.parameters())
        metrics["theoretical_loss"] = phf_losses.theoretical_loss(n_params, self.tokens_seen)
        self.log_metrics(metrics, "train")
        return metrics["loss"]

    # -------------------------------------------------------------- validation
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """LM loss on held-out chunks (control tokens, when any, are not scored as targets)."""
        ids, attn = batch["input_ids"], batch["attention_mask"]
        logp, _ = self.token_log_probs(ids, attn)
        mask = attn[:, 1:].float()
        for cid in self.control_ids:
            mask = mask * (ids[:, 1:] != cid)
        n = mask.sum().clamp(min=1)
        loss = phf_losses.mle_loss(logp, mask, "mean")
        self.log("val/loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=int(n))

    # -------------------------------------------------------------- generation
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

    # -------------------------------------------------------------- checkpoint
    def extra_state(self) -> dict:
        return {"tokens_seen": self.tokens_seen}

    def load_extra_state(self, state: dict) -> None:
        self.tokens_seen = int(state.get("tokens_seen", 0))


# ------------------------------------------------------------------ helpers
def random_model(name: str, tokenizer: str | None, overrides: dict, seed: int = 0):
    """``(model, tokenizer)`` randomly initialised from ``name``'s config (with ``overrides``)."""
    import copy

    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if name in TINY_MODELS or name == "toy" or name.lower() in SMOLLM2_ALIASES or name.endswith(".gguf"):
        model, tok = load(name, tokenizer, seed=seed)
        if (name in TINY_MODELS or name == "toy") and not overrides:
            return model, tok  # already random
        if name == "toy":
            raise ValueError("config_overrides do not apply to the toy model")
        config = copy.deepcopy(model.config)
        del model
    else:
        kw = {} if Path(name).exists() or hub_reachable() else {"local_files_only": True}
        try:
            config = AutoConfig.from_pretrained(name, **kw)
            tok = AutoTokenizer.from_pretrained(tokenizer or name, **kw)
        except (OSError, ValueError) as err:
            raise ModelLoadError(
                f"could not load the config/tokenizer of {name!r} for training from scratch ({type(err).__name__}). "
                "Offline, use a local folder, `tiny-gpt2` (with config_overrides), or `smollm2`.") from err
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"config_overrides: {type(config).__name__} has no field {key!r}")
        setattr(config, key, value)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.eval()
    return model, tok


def load_checkpoint_weights(model: nn.Module, path: str) -> None:
    """Load the ``model.*`` weights of a Lightning checkpoint (e.g. an MLE run) into ``model``."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    if not weights:
        raise ValueError(f"init_from: {path!r} holds no `model.*` weights; is it a lit_align checkpoint?")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if "attn.bias" not in k and "masked_bias" not in k]
    if missing or unexpected:
        raise ValueError(f"init_from: {path!r} does not match the model (missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}); fine-tune from a checkpoint of the same architecture without control tokens")


def add_control_tokens(model: nn.Module, tok, tokens: Sequence[str], std: float = 0.01, seed: int = 0) -> list[int]:
    """Add control tokens to the tokenizer and embeddings: new rows = mean row + N(0, std²) (§5.2)."""
    if not hasattr(model, "resize_token_embeddings"):
        raise ValueError(f"conditional training needs a Hugging Face model (resize_token_embeddings); got {type(model).__name__}")
    missing = [t for t in tokens if t not in tok.get_vocab()]
    if missing:
        tok.add_special_tokens({"additional_special_tokens": list(tokens)})
    ids = tok.convert_tokens_to_ids(list(tokens))
    old = model.get_input_embeddings().weight.shape[0]
    if len(tok) > old:
        model.resize_token_embeddings(len(tok), mean_resizing=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        mats = [model.get_input_embeddings().weight]
        out = model.get_output_embeddings()
        if out is not None and out.weight is not mats[0]:
            mats.append(out.weight)
        for w in mats:
            n_old = min(old, w.shape[0])
            mean = w[:n_old].mean(0)
            for i in ids:
                if i >= old or missing:
                    w[i] = mean + std * torch.randn(w.shape[1], generator=gen).to(w)
    return ids

