"""The NeurIPS 2022 comparison (Korbak et al., "RL vs distribution matching"; arXiv:2206.00761)
at toy scale, with exact metrics (issue 3 benchmark; not a test).

The base LM is the tabular ``ToyLM`` of docs/toy_space.md (4 letters, 4 tokens: 256 sequences),
so every quantity is computed by enumeration, not estimated: after every ``--eval-every``
steps the script enumerates the policy π and reports

- ``E_π[φ]``: constraint satisfaction (E_π[b] for the pointwise task),
- ``KL(p‖π)``: distance to the target (the hard target p, also for the ε-smoothed methods),
- ``KL(π‖a)``: distance from the base LM (forgetting),
- ``H(π)`` (exact entropy, nats) and distinct-1/2 (character n-grams per sample, gdc's
  per-text |set(n-grams)|/#n-grams, averaged over 512 samples of π) for diversity.

Tasks:

- **pointwise**: ``b(x) = 1`` iff x matches ``b.*d``; ``p = a·b/Z``.
- **distributional**: ``φ(x) = 1`` iff x ends with ``d``, desired ``E_p[φ] = 0.5`` (like
  "female biographies 0.5"); ``p ∝ a·exp(λφ)`` with λ fitted *exactly* by enumeration
  (the SNIS fit is tested in tests/test_moment_matching.py).

Methods (lit_align's modules, through Lightning, all on the same budget: ``--steps`` steps
of ``--samples`` samples, Adam with ``--lr``):

- **DPG**: on-policy forward KL, no baseline (Parshakova et al.; Khalifa et al.).
- **GDC++**: off-policy with the π/q baseline and a KL-adaptive proposal (update check every
  10 steps).
- **f-DPG (JS)**, **f-DPG (RKL)**: on-policy f-DPG with a leave-one-out baseline (Go et al.
  2023); reverse KL smooths the hard pointwise target to b + 1e-4 by default.
- **REINFORCE**: reward R = b (pointwise) or R = φ (distributional), no baseline.
- **RL-KL**: REINFORCE on R − β·log(π/a). Pointwise: R = b, β = 0.1. Distributional: R = φ,
  β = 1/λ — the β whose optimum ``a·e^{φ/β}/Z`` *is* p (it needs the answer λ).
- **PPO (Ziegler)**: per-token KL penalty, adaptive β (init 0.2, target 6, horizon 1e4),
  GAE, clipped surrogate, 4 epochs; R = b or φ.

    python benchmarks/neurips22_toy.py                     # ~5–10 min on 2 busy cores
    python benchmarks/neurips22_toy.py --steps 50 --methods DPG,GDC++   # quick look

Outputs (in ``--out``, default benchmarks/results): ``neurips22_toy.md`` (the table, also
printed), ``neurips22_toy.json`` (the curves) and, when matplotlib is installed
(``pip install .[bench]``), ``neurips22_toy.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import lightning as L  # noqa: E402
import torch  # noqa: E402

from lit_align.data import ToyDataModule  # noqa: E402
from lit_align.methods import DPG, PPO, RLKL, Reinforce  # noqa: E402
from lit_align.models.toy import ToySpace  # noqa: E402
from lit_align.moment_matching import Distributional, fit_lambdas  # noqa: E402
from lit_align.scorers import Regex  # noqa: E402
from lit_align.targets import Pointwise  # noqa: E402

POINTWISE, FEATURE, MU = "b.*d", "d$", 0.5
METHODS = ("DPG", "GDC++", "f-DPG (JS)", "f-DPG (RKL)", "REINFORCE", "RL-KL", "PPO (Ziegler)")


# ------------------------------------------------------------------ exact quantities
def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> float:
    p = torch.exp(log_p)
    return float(torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum())


def _distinct(texts: list[str], n: int) -> float:
    vals = [len({t[i:i + n] for i in range(len(t) - n + 1)}) / max(1, len(t) - n + 1) for t in texts]
    return sum(vals) / len(vals)


class Task:
    """The exact target of one task on the toy space: log a, log p and φ by enumeration."""

    def __init__(self, name: str, space: ToySpace, log_a: torch.Tensor) -> None:
        self.name, self.space, self.log_a = name, space, log_a
        if name == "pointwise":
            self.scorer = Regex(POINTWISE, name="b")
            self.phi = self.scorer(space.texts).double()
            log_P = log_a + torch.log(self.phi)
            self.lam = math.inf
        else:
            self.scorer = Regex(FEATURE, name="phi")
            self.phi = self.scorer(space.texts).double()
            fit = fit_lambdas(self.phi[:, None], [MU], log_a, tolerance=1e-12)
            self.lam = float(fit.lambdas[0])
            log_P = log_a + self.lam * self.phi
        self.log_p = log_P - torch.logsumexp(log_P, 0)
        self.desired = 1.0 if name == "pointwise" else MU

    def metrics(self, log_pi: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
        idx = torch.multinomial(torch.exp(log_pi), 512, replacement=True, generator=gen)
        texts = [self.space.texts[i] for i in idx.tolist()]
        p = torch.exp(log_pi)
        return {
            "E_phi": float((p * self.phi).sum()),
            "kl_p_pi": _kl(self.log_p, log_pi),
            "kl_pi_a": _kl(log_pi, self.log_a),
            "entropy": -float(torch.where(p > 0, p * log_pi, torch.zeros_like(p)).sum()),
            "tv_p_pi": 0.5 * float((p - torch.exp(self.log_p)).abs().sum()),
            "distinct_1": _distinct(texts, 1),
            "distinct_2": _distinct(texts, 2),
        }


class ExactMonitor(L.Callback):
    """Enumerates the policy every ``every`` steps and records the task's exact metrics."""

    def __init__(self, task: Task, every: int) -> None:
        self.task, self.every = task, every
        self.curve: list[dict[str, float]] = []
        self.gen = torch.Generator().manual_seed(0)

    def record(self, module) -> None:
        with torch.no_grad():
            log_pi = self.task.space.log_probs(module.model).detach().double()
        self.curve.append({"step": module.global_step, **self.task.metrics(log_pi, self.gen)})

    def on_train_start(self, trainer, module) -> None:
        self.record(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if module.global_step % self.every == 0:
            self.record(module)


# ------------------------------------------------------------------------- methods
def build(method: str, task: Task, args) -> L.LightningModule:
    common = dict(model="toy", n_samples=args.samples, minibatch_size=args.samples, max_new_tokens=4, lr=args.lr,
                  val_samples=8)
    if task.name == "pointwise":
        target = [Pointwise(task.scorer)]
    else:
        target = [Distributional([task.scorer], [MU], coefficients=[task.lam])]
    if method == "DPG":
        return DPG(target=target, off_policy=False, baseline=False, **common)
    if method == "GDC++":
        return DPG(target=target, off_policy=True, baseline=True, proposal_update_interval=10, **common)
    if method == "f-DPG (JS)":
        return DPG(target=target, off_policy=False, baseline=True, divergence="js", **common)
    if method == "f-DPG (RKL)":
        return DPG(target=target, off_policy=False, baseline=True, divergence="rkl", **common)
    if method == "REINFORCE":
        return Reinforce(reward=task.scorer, **common)
    if method == "RL-KL":
        beta = 0.1 if task.name == "pointwise" else 1.0 / task.lam
        return RLKL(reward=task.scorer, kl_coef=beta, **common)
    if method == "PPO (Ziegler)":
        return PPO(reward=task.scorer, ppo_minibatch_size=args.samples, **common)
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def run(method: str, task: Task, args) -> tuple[list[dict[str, float]], float]:
    L.seed_everything(args.seed, verbose=False)
    module = build(method, task, args)
    monitor = ExactMonitor(task, args.eval_every)
    trainer = L.Trainer(max_steps=args.steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[monitor])
    t0 = time.perf_counter()
    trainer.fit(module, ToyDataModule(steps_per_epoch=args.steps))
    seconds = time.perf_counter() - t0
    if monitor.curve[-1]["step"] != module.global_step:
        monitor.record(module)
    return monitor.curve, seconds


# --------------------------------------------------------------------------- report
def table(results: dict, tasks: dict[str, Task], steps: int) -> str:
    head = ("| task | method | E_π[φ] (target) | KL(p‖π) | KL(π‖a) | H(π) | distinct-1 | distinct-2 | TV(p,π) | "
            "s/step |\n|---|---|---|---|---|---|---|---|---|---|")
    rows = [head]
    for tname, task in tasks.items():
        log_pa = task.log_a
        p_row = task.metrics(task.log_p, torch.Generator().manual_seed(0))
        a_row = task.metrics(log_pa, torch.Generator().manual_seed(0))
        for label, m in (("base a (step 0)", a_row), ("target p", p_row)):
            rows.append(f"| {tname} | *{label}* | {m['E_phi']:.3f} ({task.desired:g}) | {m['kl_p_pi']:.3f} | "
                        f"{m['kl_pi_a']:.3f} | {m['entropy']:.3f} | {m['distinct_1']:.3f} | {m['distinct_2']:.3f} | "
                        f"{m['tv_p_pi']:.3f} | |")
        for method, (curve, seconds) in results[tname].items():
            m = curve[-1]
            rows.append(f"| {tname} | {method} | {m['E_phi']:.3f} | {m['kl_p_pi']:.3f} | {m['kl_pi_a']:.3f} | "
                        f"{m['entropy']:.3f} | {m['distinct_1']:.3f} | {m['distinct_2']:.3f} | {m['tv_p_pi']:.3f} | "
                        f"{seconds / steps:.3f} |")
    return "\n".join(rows)


def plot(results: dict, tasks: dict[str, Task], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG (pip install matplotlib, or pip install .[bench])", file=sys.stderr)
        return False
    keys = [("E_phi", "E_π[φ]"), ("kl_p_pi", "KL(p‖π)"), ("kl_pi_a", "KL(π‖a)"), ("entropy", "H(π)")]
    fig, axes = plt.subplots(len(tasks), len(keys), figsize=(4 * len(keys), 3.4 * len(tasks)), squeeze=False)
    for r, (tname, task) in enumerate(tasks.items()):
        ref = task.metrics(task.log_p, torch.Generator().manual_seed(0))
        for c, (key, label) in enumerate(keys):
            ax = axes[r][c]
            for method, (curve, _) in results[tname].items():
                ax.plot([m["step"] for m in curve], [m[key] for m in curve], label=method)
            ax.axhline(ref[key], color="black", ls="--", lw=0.8, label="target p")
            ax.set(title=f"{tname}: {label}", xlabel="step")
            if key == "kl_p_pi":
                ax.set_yscale("symlog", linthresh=0.1)
                ax.set_ylim(bottom=0)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--samples", type=int, default=128, help="samples per step")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tasks", default="pointwise,distributional")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--threads", type=int, default=1, help="torch threads (the toy tensors are tiny)")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    space = ToySpace(4, 4)
    with torch.no_grad():
        log_a = _base_log_probs(space, args)
    tasks = {t: Task(t, space, log_a) for t in args.tasks.split(",")}
    methods = [m for m in METHODS if m in args.methods.split(",")] or METHODS
    results: dict = {}
    for tname, task in tasks.items():
        results[tname] = {}
        for method in methods:
            curve, seconds = run(method, task, args)
            results[tname][method] = (curve, seconds)
            m = curve[-1]
            print(f"[{tname}] {method}: E[φ] {m['E_phi']:.3f}  KL(p‖π) {m['kl_p_pi']:.3f}  KL(π‖a) {m['kl_pi_a']:.3f}"
                  f"  H {m['entropy']:.3f}  ({seconds:.0f} s)", flush=True)
    md = table(results, tasks, args.steps)
    header = (f"toy space 4^4, {args.steps} steps × {args.samples} samples, Adam lr {args.lr}, seed {args.seed}; "
              f"distributional λ = {tasks['distributional'].lam:.4f}" if "distributional" in tasks else "")
    print(header)
    print(md)
    (out / "neurips22_toy.md").write_text(header + "\n\n" + md + "\n")
    (out / "neurips22_toy.json").write_text(json.dumps({t: {m: c for m, (c, _) in r.items()} for t, r in results.items()}))
    if plot(results, tasks, out / "neurips22_toy.png"):
        print(f"wrote {out / 'neurips22_toy.png'}")


def _base_log_probs(space: ToySpace, args) -> torch.Tensor:
    """Exact log a(x) of the base every method loads (``model: toy``, the default model seed)."""
    module = DPG(target=[Pointwise(Regex(POINTWISE))], model="toy", max_new_tokens=4)
    module.configure_model()
    return space.log_probs(module.engine.base).detach().double()


if __name__ == "__main__":
    main()
