"""An optional sampling backend on vLLM (GPU), behind the same interface as :class:`Policy`.

``sampler: vllm`` on a method makes :meth:`BasePolicyModule.sample` draw completions with a
vLLM engine holding a copy of the weights of the model being sampled (synchronised before
each call). Only the *tokens* come from vLLM: the returned ``log_q`` is recomputed by the
training model (:meth:`Policy.log_prob`), so importance weights never use the engine's
log-probs. Sampling is exact ancestral (temperature 1, no top-k/top-p) like the native
sampler; the engine's kernels may differ slightly from the training model's, which the
recomputed ``log_q`` absorbs only approximately (docs/scale.md).

``pip install 'lit-align[vllm]'`` installs vLLM. Not available with ``lora:`` (the engine
would need the adapters merged per call) or for models that are not Hugging Face folders.
"""

from __future__ import annotations

import tempfile
from typing import Sequence

import torch
from torch import nn

from lit_align.models.policy import Policy, Samples


def require_vllm():
    try:
        import vllm
    except ImportError as err:
        raise ImportError(
            "sampler: vllm needs the package vllm and a CUDA GPU: pip install 'lit-align[vllm]'; "
            "or use the default sampler: native"
        ) from err
    return vllm


class VLLMSampler:
    """Draw samples with vLLM; ``log_q`` from the training model. ``engine_kwargs`` go to ``vllm.LLM``."""

    def __init__(self, policy: Policy, engine_kwargs: dict | None = None) -> None:
        self.vllm = require_vllm()
        if not policy.exact:
            raise ValueError("sampler: vllm supports exact ancestral sampling only (temperature 1, top_k 0, top_p 1)")
        self.policy = policy
        self.engine_kwargs = {"gpu_memory_utilization": 0.3, "enforce_eager": True, **(engine_kwargs or {})}
        self.llm = None

    def _engine(self, model: nn.Module):
        if self.llm is None:
            if not hasattr(model, "save_pretrained") or hasattr(model, "peft_model") or hasattr(model, "disable_adapter"):
                raise ValueError("sampler: vllm needs a plain Hugging Face model (not toy, not lora)")
            folder = tempfile.mkdtemp(prefix="lit_align_vllm_")
            model.save_pretrained(folder)
            self.policy.tokenizer.save_pretrained(folder)
            self.llm = self.vllm.LLM(model=folder, **self.engine_kwargs)
        return self.llm

    def sync_weights(self, model: nn.Module) -> None:
        """Load ``model``'s current weights into the engine (its worker's ``load_weights``)."""
        llm = self._engine(model)
        weights = ((k, v.detach()) for k, v in model.state_dict().items())
        try:
            llm.llm_engine.model_executor.driver_worker.model_runner.model.load_weights(weights)
        except AttributeError:  # newer engines: run it in every worker
            llm.collective_rpc("load_weights", args=(list(weights),))

    @torch.no_grad()
    def sample(self, model: nn.Module, contexts: Sequence[str], n_per_context: int) -> Samples:
        if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
            raise ValueError("sampler: vllm supports causal LMs only")
        self.sync_weights(model)
        device = next(model.parameters()).device
        prompts = [self.policy.encode_context(c) for c in contexts]
        params = self.vllm.SamplingParams(n=n_per_context, temperature=1.0, top_p=1.0, top_k=-1,
                                          max_tokens=self.policy.max_new_tokens, ignore_eos=False)
        outputs = self._engine(model).generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        rows = [list(c.token_ids) for out in outputs for c in out.outputs]
        width = max(1, max(len(r) for r in rows))
        tokens = torch.full((len(rows), width), self.policy.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            tokens[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        ids, mask = self.policy.encode_contexts(contexts, device=device)
        comp_mask = self.policy.completion_mask(tokens).to(device)
        tokens = tokens.to(device).masked_fill(comp_mask == 0, self.policy.pad_id)
        ctx_index = torch.arange(len(contexts), device=device).repeat_interleave(n_per_context)
        samples = Samples(
            prompt_ids=ids.repeat_interleave(n_per_context, 0), prompt_mask=mask.repeat_interleave(n_per_context, 0),
            completion_ids=tokens, completion_mask=comp_mask, log_q=torch.zeros(len(rows), device=device),
            texts=self.policy.decode(tokens, comp_mask), contexts=[contexts[i] for i in ctx_index.tolist()],
            context_index=ctx_index,
        )
        # importance weights use the training model's log-probs, never the engine's
        samples.log_q = self.policy.log_prob(model, samples).float()
        return samples
