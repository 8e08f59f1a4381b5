"""Methods whose samples come from a fixed script, for tests that compare runs exactly.

``scripted(cls, pool_ids, pool_texts)`` subclasses a method so that its k-th sampling call
returns rows ``rank·n … (rank+1)·n`` of a fixed random draw of ``n·world`` rows of the pool
(each continuing the batch's first context), with log q recomputed by the sampling model.
The union over ranks is the same at every call whatever the number of ranks, and the samples
do not depend on the model's precision: DDP and single-process runs, or bf16 and fp32 runs,
see the same data and can be compared step by step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_align.models.policy import Samples


def scripted(cls, pool_ids: Tensor, pool_texts: list[str]):
    class Scripted(cls):
        calls = 0

        def sample(self, contexts, n=None, model=None) -> Samples:
            n = n or self.hparams.n_samples
            trainer = self._trainer
            world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
            gen = torch.Generator().manual_seed(1000 + self.calls)
            self.calls += 1
            idx = torch.randint(0, len(pool_ids), (n * world,), generator=gen)[rank * n : (rank + 1) * n]
            seqs = pool_ids[idx].to(self.device)
            prompt_ids, prompt_mask = self.policy.encode_contexts([contexts[0]] * n, device=self.device)
            samples = Samples(
                prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=seqs,
                completion_mask=torch.ones_like(seqs), log_q=torch.zeros(n, device=self.device),
                texts=[pool_texts[i] for i in idx.tolist()], contexts=[contexts[0]] * n,
                context_index=torch.zeros(n, dtype=torch.long, device=self.device),
            )
            samples.log_q = self.policy.log_prob(model or self.model, samples).float()
            return samples

    Scripted.__name__ = Scripted.__qualname__ = f"Scripted{cls.__name__}"
    return Scripted


def letter_pool(tokenizer, n: int = 64, length: int = 6, letters: str = "abcd", seed: int = 0):
    """``n`` random strings of ``length`` letters and their token ids (one token per letter)."""
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(letters), (n, length), generator=gen)
    texts = ["".join(letters[i] for i in row) for row in picks.tolist()]
    ids = torch.tensor([tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts])
    if ids.shape != (n, length):
        raise ValueError("letter_pool needs a tokenizer with one token per letter (the byte tokenizer)")
    return ids, texts
