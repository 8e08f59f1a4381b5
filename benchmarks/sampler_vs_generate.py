"""Benchmark: lit_align's sampler (``Policy.sample``) against plain ``transformers`` ``model.generate``.

Both sides do the same work in every timed call:

* same model, dtype, thread count, prompt, batch size (one prompt repeated ``--batch`` times);
* pure ancestral sampling from the model's distribution (temperature 1, no top-k, no top-p);
* exactly ``--new-tokens`` new tokens per row: EOS is *ignored* on both sides by default
  (``Policy.eos_id = None``; ``generate(eos_token_id=None)``), so neither side stops early and
  every row has the same length. We deliberately do **not** use ``min_new_tokens``, which masks
  EOS and would change the distribution sampled from (and hence the log-probs);
* per-sequence log-probs of the sampled completions under the sampled distribution:
  ``Samples.log_q`` for lit_align; for ``generate`` ``output_scores=True,
  return_dict_in_generate=True`` followed by a normalised ``log_softmax`` gathered at the sampled
  tokens (``--gen-logprobs gather``, default, the cheaper way) or
  ``model.compute_transition_scores(..., normalize_logits=True)`` (``--gen-logprobs transition``);
* tokenising the prompt and decoding the completions to text (``Policy.sample`` does both, so the
  generate side does too).

Memory: each side runs once in its own fresh subprocess (load, page the weights in, warm-up call,
``--mem-calls`` more calls), so its peak RSS is its own. Peak RSS is the kernel's high-water mark
``VmHWM`` of that process, reset (``/proc/self/clear_refs``) once the model is loaded and its
weights touched, so "peak RSS" is the peak while sampling and "ΔRSS" is that peak minus the RSS
before the first call (i.e. the working memory of sampling: KV cache, activations, logits, stored
scores).

Time: by default all sides are timed in one further process, one warm-up call each, then
``--repeats`` rounds in which every side is called once (rotating order), so a background load
hits all sides alike (``--timing isolated`` times each side in its own memory process instead).
Before every timed call the script waits (≤ ``--wait-idle`` s) until other processes leave the
CPUs, and it measures the CPU share other processes took *during* the call from ``/proc/stat``;
calls with ≥ ``--idle-threshold`` foreign CPU are left out of the statistics when clean calls
exist. On 2 cores a second busy process makes 2-thread PyTorch calls up to 10× slower (OpenMP
threads wait on each other), so without this the numbers are noise on a shared machine.

Correctness is checked on the last call of each side against a separate full forward pass over
``prompt + completion`` (no KV cache): the max abs difference of the per-sequence log-probs is
printed, so both sides are shown to return the same (correct) numbers. With the same seed the two
sides draw from the same distribution (lit_align by inverse CDF since e8094a0, generate by
``torch.multinomial``), so identical tokens are no longer expected; the
fraction of identical tokens is printed as a distribution check.

Usage::

    python benchmarks/sampler_vs_generate.py --model tiny-gpt2          # quick check
    python benchmarks/sampler_vs_generate.py                            # SmolLM2-135M-Instruct
    python benchmarks/sampler_vs_generate.py --dtype bfloat16 --repeats 3

Sides: ``lit_align`` is ``policy.sample(model, [prompt], batch)``, which prefills the prompt once
and shares its KV cache among the samples; ``lit_align-copies`` is
``policy.sample(model, [prompt] * batch, 1)``, whose prefill is exactly generate's (``batch``
copies); ``generate-tokens-only`` runs ``generate`` without scores/log-probs as a lower bound for
reference (skip it with ``--no-reference``); ``lit_align-fast`` (opt-in via ``--sides``) is the
prototype of ``prototype_sampler.py``, which ``Policy`` itself now uses (lit_align/models/draw.py),
so the two rows should agree. ``lit_align-bf16`` samples under bf16 autocast (``sample_dtype:
bfloat16``), ``lit_align-bf16-cast`` with the weights cast to bf16 once per call instead
(``sample_cast_weights: true``; ``generate-bf16-cast`` gives ``generate`` the same, with its static
cache); ``lit_align-dynamic`` / ``lit_align-bf16-dynamic`` are the sampler with its static KV
cache turned off (``Policy.static_cache = False``, a growing ``DynamicCache``, as before 2026-12-06);
``generate-static``, ``generate-bf16`` and ``generate-bf16-static`` give ``generate`` the same
advantages (``cache_implementation="static"``, bf16 autocast), so it is compared at its best too.
``--profile`` prints a torch.profiler table of one call per side (not
timed). See README.md in this folder for results.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

SIDES = ("lit_align", "lit_align-copies", "generate", "generate-tokens-only", "lit_align-fast", "lit_align-bf16",
         "lit_align-dynamic", "lit_align-bf16-dynamic", "generate-static", "generate-bf16", "generate-bf16-static",
         "lit_align-bf16-cast", "generate-bf16-cast")
DEFAULT_SIDES = ("lit_align", "lit_align-copies", "generate", "generate-tokens-only")
DEFAULT_PROMPT = "Write a short story about a robot who learns to paint."


# --------------------------------------------------------------------------- memory
def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux ≥ 4.0); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- CPU contention
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_snapshot() -> tuple[float, float, float]:
    """(wall s, CPU-seconds busy on the whole machine, CPU-seconds used by this process)."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    busy = f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] if len(f) > 7 else 0)  # user nice system irq softirq steal
    with open("/proc/self/stat") as fh:
        st = fh.read().rsplit(")", 1)[1].split()
    own = int(st[11]) + int(st[12])  # utime + stime, all threads
    return time.perf_counter(), busy / _TICK, own / _TICK


def _foreign_fraction(a, b) -> float:
    """Share of the machine's CPU capacity used by *other* processes (and steal) between two snapshots."""
    wall = max(b[0] - a[0], 1e-9)
    return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / ((os.cpu_count() or 1) * wall))


def _wait_idle(args) -> float:
    """Wait (≤ --wait-idle s) until a 0.5 s probe shows < --idle-threshold foreign CPU; return the last probe."""
    deadline = time.perf_counter() + args.wait_idle
    while True:
        a = _cpu_snapshot()
        time.sleep(0.5)
        frac = _foreign_fraction(a, _cpu_snapshot())
        if frac < args.idle_threshold or time.perf_counter() >= deadline:
            return frac


def _timed(call, args):
    """Run ``call`` once after waiting for an idle machine: (output, seconds, foreign CPU fraction during the call)."""
    if args.wait_idle > 0:
        _wait_idle(args)
    a = _cpu_snapshot()
    out = call()
    b = _cpu_snapshot()
    return out, b[0] - a[0], _foreign_fraction(a, b)


# --------------------------------------------------------------------------- worker
def _reference_log_probs(model, prompt_ids, prompt_mask, completion, completion_mask):
    """Per-sequence log-probs by one full forward pass over prompt + completion (no cache)."""
    import torch

    ids = torch.cat([prompt_ids, completion], dim=1)
    mask = torch.cat([prompt_mask, torch.ones_like(completion)], dim=1)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
    lc = completion.shape[1]
    logp = torch.log_softmax(logits[:, -(lc + 1) : -1].float(), dim=-1)
    tok_lp = logp.gather(-1, completion[..., None]).squeeze(-1)
    return (tok_lp * completion_mask).sum(-1)


def _setup(args):
    """Load the model and build one zero-argument callable per side (each does a full call)."""
    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    from lit_align.models.loading import load
    from lit_align.models.policy import Policy

    dtype = None if args.dtype == "float32" else args.dtype
    t0 = time.perf_counter()
    model, tok = load(args.model, dtype=dtype)
    model.to(args.device)
    load_s = time.perf_counter() - t0
    model.eval()
    policy = Policy(tok, max_new_tokens=args.new_tokens, chat_template=args.chat_template)
    eos = policy.eos_id
    if not args.stop_at_eos:
        policy.eos_id = None  # never stop early, score every token (identical work on both sides)
    prompt, n_new, batch = args.prompt, args.new_tokens, args.batch

    def completion_mask(tokens):
        if not args.stop_at_eos or eos is None:
            return torch.ones_like(tokens)
        is_eos = (tokens == eos).long()
        return ((is_eos.cumsum(-1) - is_eos) == 0).long()

    def run_lit(pol=policy, copies=False):
        # Policy.sample(model, [prompt], batch) encodes the prompt once and shares its KV cache among the
        # `batch` samples; with copies=True it gets `batch` copies of the prompt (n_per_context=1), so its
        # prefill is exactly generate's (which always prefills every row)
        s = pol.sample(model, [prompt] * batch, 1) if copies else pol.sample(model, [prompt], batch)
        return s.prompt_ids, s.prompt_mask, s.completion_ids, s.completion_mask, s.log_q, s.texts

    def run_lit_fast():
        # prototype in benchmarks/prototype_sampler.py: Policy with inverse-CDF sampling instead of multinomial
        from prototype_sampler import FastPolicy

        fast = FastPolicy(tok, max_new_tokens=n_new, chat_template=args.chat_template)
        fast.eos_id = policy.eos_id
        return run_lit(fast)

    def bf16(call):
        # what `sample_dtype: bfloat16` does in training: an fp32 model sampled under bf16 autocast
        # (weights cast once per call); log_q is the density of that bf16 forward, the one sampled from
        def run():
            with torch.autocast(model.device.type, dtype=torch.bfloat16):
                return call()
        return run

    def cast(call):
        # what `sample_cast_weights: true` does in training: the fp32 model's weights cast to bf16 once
        # per call (charged to the call), no autocast; generate gets the same (with its static cache)
        from lit_align.models.engine import cast_weights

        def run():
            with cast_weights(model, torch.bfloat16):
                return call()
        return run

    # the sampler before its static KV cache: a DynamicCache grown by concatenation every token
    dynamic = Policy(tok, max_new_tokens=n_new, chat_template=args.chat_template)
    dynamic.eos_id, dynamic.static_cache = policy.eos_id, False
    # generate at its best: cache_implementation="static" preallocates the KV cache as lit_align does
    static = {"cache_implementation": "static"}

    def run_generate(with_logprobs: bool, **extra):
        ids, mask = policy.encode_contexts([prompt], device=model.device)
        ids, mask = ids.repeat(batch, 1), mask.repeat(batch, 1)
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=n_new,
            eos_token_id=eos if args.stop_at_eos else None,
            pad_token_id=tok.pad_token_id,
            output_scores=with_logprobs,
            return_dict_in_generate=True,
            **extra,
        )
        comp = out.sequences[:, ids.shape[1] :]
        cmask = completion_mask(comp)
        log_q = None
        if with_logprobs:
            if args.gen_logprobs == "transition":
                ts = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
            else:
                ts = torch.stack(
                    [torch.log_softmax(s, dim=-1).gather(-1, comp[:, i : i + 1]).squeeze(-1)
                     for i, s in enumerate(out.scores)],
                    dim=1,
                )
            log_q = (ts.float() * cmask).sum(-1)
        texts = tok.batch_decode(comp.masked_fill(cmask == 0, tok.pad_token_id), skip_special_tokens=True)
        return ids, mask, comp, cmask, log_q, texts

    calls = {
        "lit_align": run_lit,
        "lit_align-copies": lambda: run_lit(copies=True),
        "generate": lambda: run_generate(True),
        "generate-tokens-only": lambda: run_generate(False),
        "lit_align-fast": run_lit_fast,
        "lit_align-bf16": bf16(run_lit),
        "lit_align-dynamic": lambda: run_lit(dynamic),
        "lit_align-bf16-dynamic": bf16(lambda: run_lit(dynamic)),
        "generate-static": lambda: run_generate(True, **static),
        "generate-bf16": bf16(lambda: run_generate(True)),
        "generate-bf16-static": bf16(lambda: run_generate(True, **static)),
        "lit_align-bf16-cast": cast(run_lit),
        "generate-bf16-cast": cast(lambda: run_generate(True, **static)),
    }
    meta = {
        "load_s": load_s,
        "n_params": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "threads": torch.get_num_threads(),
    }
    return model, policy, calls, meta


def worker_isolated(args, side: str) -> dict:
    """One side alone in this process: peak RSS, correctness checks, first-call tokens (and timings)."""
    import torch

    model, policy, calls, meta = _setup(args)
    call = calls[side]
    with torch.no_grad():  # page in the (mmap-loaded) weights so that ΔRSS is sampling memory only
        for t in list(model.parameters()) + list(model.buffers()):
            t.sum()
    gc.collect()
    rss_loaded_kb = _proc_status_kb("VmRSS")
    peak_reset = _reset_peak_rss()
    cuda = args.device.startswith("cuda")
    if cuda:  # on a GPU the memory columns are CUDA allocations, not RSS
        torch.cuda.synchronize()
        rss_loaded_kb = torch.cuda.memory_allocated() / 1024
        torch.cuda.reset_peak_memory_stats()

    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    first = call()  # warm-up
    warmup_s = time.perf_counter() - t0
    n_calls = args.repeats if args.timing == "isolated" else args.mem_calls
    times, tokens, foreign, last = [], [], [], first
    for _ in range(n_calls):
        last, dt, ff = _timed(call, args) if args.timing == "isolated" else (call(), float("nan"), float("nan"))
        times.append(dt)
        foreign.append(ff)
        tokens.append(int(last[3].sum()))
    peak_kb = torch.cuda.max_memory_allocated() / 1024 if cuda else _proc_status_kb("VmHWM")

    # Correctness: log-probs vs a separate full forward pass (last call).
    prompt_ids, prompt_mask, comp, cmask, log_q, texts = last
    batch = comp.shape[0]
    check = {}
    if log_q is not None:
        ref = _reference_log_probs(model, prompt_ids, prompt_mask, comp, cmask)
        check["max_abs_diff_vs_forward"] = float((log_q - ref).abs().max())
        check["mean_logp"] = float(log_q.mean())
        check["mean_logp_ref"] = float(ref.mean())
        if side.startswith("lit_align"):  # also lit_align's own scorer
            from lit_align.models.policy import Samples

            s = Samples(prompt_ids, prompt_mask, comp, cmask, log_q, [""] * batch, [args.prompt] * batch,
                        torch.zeros(batch, dtype=torch.long, device=comp.device))
            check["max_abs_diff_vs_Policy.log_prob"] = float((log_q - policy.log_prob(model, s)).abs().max())

    prof = None
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as p:
            call()
        prof = p.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows)

    return dict(meta, side=side, warmup_s=warmup_s, times=times, tokens=tokens, foreign=foreign,
                first_tokens=first[2].tolist(),
                rss_loaded_mb=rss_loaded_kb / 1024, peak_rss_mb=peak_kb / 1024, peak_reset=peak_reset, check=check,
                sample_text=texts[0][:120], profile=prof, prompt_len=int(prompt_ids.shape[1]))


def worker_timing(args, sides: list[str]) -> dict:
    """All sides in one process, calls interleaved (rotating order) so background load hits all alike."""
    import torch

    _, _, calls, meta = _setup(args)
    torch.manual_seed(args.seed)
    for side in sides:  # warm-up
        calls[side]()
    times = {s: [] for s in sides}
    tokens = {s: [] for s in sides}
    foreign = {s: [] for s in sides}
    for r in range(args.repeats):
        order = sides[r % len(sides) :] + sides[: r % len(sides)]
        for side in order:
            out, dt, ff = _timed(calls[side], args)
            times[side].append(dt)
            foreign[side].append(ff)
            tokens[side].append(int(out[3].sum()))
    return dict(meta, times=times, tokens=tokens, foreign=foreign)


# --------------------------------------------------------------------------- driver
def run_worker(role: str, args) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    cmd = [sys.executable, os.path.abspath(__file__), "--_worker", role, "--_out", out] + sys.argv[1:]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout)
        raise SystemExit(f"worker {role!r} failed with exit code {proc.returncode}")
    with open(out) as fh:
        res = json.load(fh)
    os.unlink(out)
    return res


def _git_state() -> str:
    """Commit of the checkout and whether lit_align/models (the sampler) has uncommitted changes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "lit_align/models"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + (" (lit_align/models modified)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _fmt_row(cols, widths):
    return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cols, widths)))


def report(results: dict, args, loadavg, git_state: str = "unknown") -> str:
    lines = []
    first = next(iter(results.values()))
    lines.append(
        f"model={args.model} ({first['n_params'] / 1e6:.1f}M params)  dtype={args.dtype}  batch={args.batch}  "
        f"new_tokens={args.new_tokens}  prompt_len={first['prompt_len']}  threads={first['threads']}  "
        f"repeats={args.repeats} (+warm-up, timing={args.timing})  stop_at_eos={args.stop_at_eos}  "
        f"gen_logprobs={args.gen_logprobs}  device={args.device}"
    )
    lines.append(
        f"date={datetime.date.today().isoformat()}  torch={first['torch']}  transformers={first['transformers']}  "
        f"python={platform.python_version()}  "
        f"cpu_count={os.cpu_count()}  machine={platform.machine()}  "
        f"loadavg(1 min) before/after={loadavg[0]:.2f}/{loadavg[1]:.2f}  git={git_state}"
    )
    mem = "GPU" if args.device.startswith("cuda") else "RSS"
    head = ["side", "median s/call", "min s/call", "tokens/s", "samples/s", f"{mem} loaded MB", f"peak {mem} MB", f"Δ{mem} MB",
            "max|Δlogp| vs fwd"]
    widths = [22, 13, 10, 9, 9, 13, 11, 8, 18]
    lines.append(_fmt_row(head, widths))
    lines.append("-" * (sum(widths) + 2 * (len(widths) - 1)))
    summary = {}
    contended = []
    for side, r in results.items():
        # calls during which other processes used ≥ --idle-threshold of the machine are left out (if any are clean)
        clean = [i for i, f in enumerate(r["foreign"]) if f < args.idle_threshold]
        if len(clean) < len(r["times"]):
            contended.append(f"{side}: {len(r['times']) - len(clean)}/{len(r['times'])}")
        keep = clean or list(range(len(r["times"])))
        r["times_used"] = [r["times"][i] for i in keep]
        med = statistics.median(r["times_used"])
        tok = statistics.median(r["tokens"])  # generated (scored) tokens per call
        diff = r["check"].get("max_abs_diff_vs_forward")
        summary[side] = dict(med=med, min=min(r["times_used"]), tps=tok / med, sps=args.batch / med,
                             peak=r["peak_rss_mb"],
                             delta=r["peak_rss_mb"] - r["rss_loaded_mb"])
        lines.append(_fmt_row([
            side, f"{med:.3f}", f"{min(r['times_used']):.3f}", f"{tok / med:.0f}", f"{args.batch / med:.1f}",
            f"{r['rss_loaded_mb']:.0f}", f"{r['peak_rss_mb']:.0f}", f"{summary[side]['delta']:.0f}",
            "n/a (no log-probs)" if diff is None else f"{diff:.2e}",
        ], widths))
    pairs = [("lit_align", "generate"), ("lit_align-bf16", "generate"), ("lit_align-copies", "generate"),
             ("lit_align", "generate-static"), ("lit_align-bf16", "generate-bf16"),
             ("lit_align-bf16", "generate-bf16-static"), ("lit_align-bf16-cast", "generate"),
             ("lit_align-bf16-cast", "generate-bf16-cast"), ("lit_align-bf16-cast", "lit_align-bf16"),
             ("lit_align", "lit_align-dynamic"),
             ("lit_align-bf16", "lit_align-bf16-dynamic"),
             ("lit_align", "generate-tokens-only"),
             ("lit_align-fast", "generate"), ("lit_align-fast", "lit_align")]
    for x, y in pairs:
        if x in summary and y in summary:
            a, b = summary[x], summary[y]
            lines.append(
                f"ratio {x}/{y}: time (median) {a['med'] / b['med']:.2f}x  time (min) {a['min'] / b['min']:.2f}x  "
                f"tokens/s {a['tps'] / b['tps']:.2f}x  samples/s {a['sps'] / b['sps']:.2f}x  "
                f"peak RSS {a['peak'] / b['peak']:.2f}x  ΔRSS {a['delta'] / max(b['delta'], 1e-9):.2f}x"
            )
    for side, r in results.items():
        extra = {k: (f"{v:.3e}" if "diff" in k else f"{v:.3f}") for k, v in r["check"].items()}
        lines.append(f"[{side}] times={[round(t, 3) for t in r['times']]}  "
                     f"foreign CPU={[round(f, 2) for f in r['foreign']]}  checks={extra}")
    for lit in ("lit_align", "lit_align-copies"):
        if lit in results and "generate" in results:
            x, y = results[lit]["first_tokens"], results["generate"]["first_tokens"]
            same = sum(a == b for ra, rb in zip(x, y) for a, b in zip(ra, rb))
            total = sum(len(r) for r in x)
            rows = sum(ra == rb for ra, rb in zip(x, y))
            lines.append(f"same seed -> identical tokens {lit} vs generate: {same}/{total} tokens, "
                         f"{rows}/{len(x)} rows")
    if contended:
        lines.append(f"contended calls left out of the statistics (foreign CPU ≥ {args.idle_threshold:.0%}): "
                     + ", ".join(contended) + "; if a side had no clean call, all its calls were used")
    if not all(r["peak_reset"] for r in results.values()):
        lines.append("note: could not reset VmHWM; peak RSS includes model loading")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2",
                   help="lit_align model name (smollm2, tiny-gpt2, tiny-llama, a folder ...)")
    p.add_argument("--batch", type=int, default=32, help="sequences per call (one prompt repeated)")
    p.add_argument("--new-tokens", type=int, default=32, help="new tokens per sequence")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per side after one warm-up call")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--chat-template", action="store_true", help="wrap the prompt in the tokenizer's chat template")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda (memory columns are then CUDA allocations)")
    p.add_argument("--stop-at-eos", action="store_true",
                   help="let both sides stop at EOS; tokens/s then counts actual (scored) tokens")
    p.add_argument("--gen-logprobs", choices=("gather", "transition"), default="gather",
                   help="how generate's log-probs are computed from its scores")
    p.add_argument("--timing", choices=("interleaved", "isolated"), default="interleaved",
                   help="interleaved: time all sides in one process, alternating calls (robust to background load); "
                        "isolated: time each side in its own process")
    p.add_argument("--wait-idle", type=float, default=120.0,
                   help="before each timed call wait up to this many seconds for other processes to leave the CPUs "
                        "(0: don't wait)")
    p.add_argument("--idle-threshold", type=float, default=0.10,
                   help="share of the machine's CPU used by other processes above which a call counts as contended "
                        "(contended calls are left out of the statistics when clean ones exist)")
    p.add_argument("--mem-calls", type=int, default=1,
                   help="calls after the warm-up in the per-side memory/check process (interleaved timing)")
    p.add_argument("--sides", default=",".join(DEFAULT_SIDES),
                   help=f"comma-separated subset of {SIDES} (lit_align-fast: the prototype in prototype_sampler.py)")
    p.add_argument("--no-reference", action="store_true", help="skip the generate-tokens-only row")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table of one call per side")
    p.add_argument("--profile-rows", type=int, default=25)
    p.add_argument("--json", help="also write the raw results to this file")
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    p.add_argument("--_out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    sides = [s for s in args.sides.split(",") if s]
    if args.no_reference and "generate-tokens-only" in sides:
        sides.remove("generate-tokens-only")
    for s in sides:
        if s not in SIDES:
            raise SystemExit(f"unknown side {s!r}; choose from {SIDES}")
    if args._worker:
        res = worker_timing(args, sides) if args._worker == "timing" else worker_isolated(args, args._worker)
        with open(args._out, "w") as fh:
            json.dump(res, fh)
        return
    load_before, git_before = os.getloadavg()[0], _git_state()
    results = {}
    for side in sides:
        print(f"[{side}] memory + correctness (own process) ...", flush=True)
        results[side] = run_worker(side, args)
    if args.timing == "interleaved":
        print(f"timing {', '.join(sides)} interleaved in one process ...", flush=True)
        timing = run_worker("timing", args)
        for side in sides:
            results[side]["times"] = timing["times"][side]
            results[side]["tokens"] = timing["tokens"][side]
            results[side]["foreign"] = timing["foreign"][side]
    git_after = _git_state()
    text = report(results, args, (load_before, os.getloadavg()[0]),
                  git_before if git_before == git_after else f"{git_before} -> {git_after} (changed during the run!)")
    print(text)
    if args.profile:
        for side, r in results.items():
            print(f"\n=== torch.profiler, one call: {side} ===\n{r['profile']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "results": results, "report": text}, fh, indent=1)


if __name__ == "__main__":
    main()
