"""Claims on the exact toy space (4 letters × 4 tokens, 256 sequences; ``model: toy``).

Every run logs exact metrics by enumeration (:class:`benchmarks.repro.toy_exact.ExactToyMetrics`),
so the only noise across seeds is the training's own sampling. Settings follow
``benchmarks/neurips22_toy.py`` (128 samples per step, Adam, pointwise b = "b.*d",
distributional φ = "d$" with E_p[φ] = 0.5, RL-KL's β = 1/λ in the distributional task), except
that REINFORCE and RL-KL get the leave-one-out baseline (``baseline: batch_mean``), as DPG/GDC++
and PPO get theirs: the comparison is between objectives, not between variance reductions.
"""

from __future__ import annotations

import math

import torch

from benchmarks.repro.analysis import at_matched, best_lr, effect, last, minimum, paired, per_seed
from benchmarks.repro.claims import Claim, n
from benchmarks.repro.runner import Run
from benchmarks.repro.stats import combine, estimate
from benchmarks.repro.toy_exact import target_log_probs, kl

POINTWISE, FEATURE, MOMENT = "b.*d", "d$", 0.5
CH2_BETA = 0.5
BUDGETS = {  # steps × samples per step, the shared learning-rate grid
    "quick": {"steps": 100, "samples": 128, "lrs": [0.1]},
    "cpu": {"steps": 200, "samples": 128, "lrs": [0.03, 0.1]},
    "gpu": {"steps": 300, "samples": 128, "lrs": [0.01, 0.03, 0.1]},  # the toy runs on CPU in any case
}
EVERY = 10


def budget_line(b: str) -> str:
    s = BUDGETS[b]
    return f"{s['steps']} steps × {s['samples']} samples, lr ∈ {s['lrs']}"


def scorer(pattern: str, name: str) -> dict:
    return {"class_path": n("class.Regex"), "init_args": {"pattern": pattern, "name": name}}


def reference(kind: str, pattern: str, beta: float = 1.0) -> dict:
    """Closed forms on the toy space: the target p of the claim against the base a (seed 0)."""
    from lit_align.models.toy import ToyLM, ToySpace
    from lit_align.scorers import Regex

    space = ToySpace(4, 4)
    with torch.no_grad():
        log_a = space.log_probs(ToyLM(seed=0)).double()
    phi = Regex(pattern)(space.texts).double()
    log_p, coef = target_log_probs(kind, phi, log_a, beta, MOMENT)
    p = torch.exp(log_p)
    entropy = -float(torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum())
    return {"kl_p_a": kl(log_p, log_a), "E_phi": float((p * phi).sum()), "entropy": entropy, "coef": coef,
            "E_phi_a": float((torch.exp(log_a) * phi).sum())}


def method_model(method: str, task: str, lr: float, samples: int) -> dict:
    common = {"model": "toy", "n_samples": samples, "minibatch_size": samples, "max_new_tokens": 4, "lr": lr,
              "val_samples": 8}
    ref = reference(*TASKS[task][:2], beta=CH2_BETA)
    if task == "pointwise":
        target = [{"class_path": n("class.Pointwise"), "init_args": {"scorer": scorer(POINTWISE, "b")}}]
        reward, kl_coef = scorer(POINTWISE, "b"), 0.1
    elif task == "tilt":
        target = [{"class_path": n("class.RewardTilt"),
                   "init_args": {"scorer": scorer(POINTWISE, "b"), n("param.tilt.temperature"): CH2_BETA}}]
        reward, kl_coef = scorer(POINTWISE, "b"), CH2_BETA
    else:  # distributional: DPG fits λ itself (moment matching); RL-KL gets β = 1/λ, the answer
        target = [{"class_path": n("class.Distributional"),
                   "init_args": {"scorers": [scorer(FEATURE, "phi")], "moments": [MOMENT]}}]
        reward, kl_coef = scorer(FEATURE, "phi"), 1.0 / ref["coef"]
    if method in ("DPG", "GDC++"):
        off = method == "GDC++"
        args = {"target": target, "off_policy": off, "baseline": off, "proposal_update_interval": 10}
        return {"class_path": n("class.DPG"), "init_args": {**common, **args}}
    if method == "RL-KL":  # the leave-one-out baseline: the RL trainers get their variance reduction too
        return {"class_path": n("class.RLKL"),
                "init_args": {**common, "reward": reward, n("param.rlkl.kl_coef"): kl_coef, "baseline": "batch_mean"}}
    if method == "REINFORCE":
        return {"class_path": n("class.REINFORCE"), "init_args": {**common, "reward": reward, "baseline": "batch_mean"}}
    if method == "PPO (Ziegler)":
        return {"class_path": n("class.PPO"), "init_args": {**common, "reward": reward, "ppo_minibatch_size": samples}}
    raise ValueError(method)


# task -> (exact target kind, pattern, methods)
TASKS = {
    "tilt": ("tilt", POINTWISE, ["RL-KL", "GDC++"]),
    "pointwise": ("pointwise", POINTWISE, ["DPG", "GDC++", "RL-KL", "PPO (Ziegler)", "REINFORCE"]),
    "distributional": ("distributional", FEATURE, ["DPG", "GDC++", "RL-KL", "PPO (Ziegler)", "REINFORCE"]),
}


def toy_runs(task: str, budget: str, seeds: list[int], steps: int | None = None) -> list[Run]:
    kind, pattern, methods = TASKS[task]
    b = BUDGETS[budget]
    steps = steps or b["steps"]
    cb = {"class_path": n("class.ExactToyMetrics"),
          "init_args": {"pattern": pattern, "target": kind, "beta": CH2_BETA, "moment": MOMENT, "every_n_steps": EVERY}}
    runs = []
    for method in methods:
        for lr in b["lrs"]:
            for seed in seeds:
                overrides = {"model": method_model(method, task, lr, b["samples"]), "trainer.max_steps": steps,
                             "trainer.limit_val_batches": 0, "trainer.num_sanity_val_steps": 0,
                             "trainer.log_every_n_steps": EVERY, "trainer.callbacks": [],
                             "data.init_args.steps_per_epoch": steps + 1}
                runs.append(Run(method, seed, n("config.toy"), overrides, lr=lr, callbacks=(cb,), ckpt_every=50))
    return runs


# ---------------------------------------------------------------------------- reading
READINGS = {  # label -> (how to read one run, lower is better)
    "KL(p‖π) best": (lambda c: minimum(c, "exact/kl_p_pi"), True),
    "KL(p‖π) end": (lambda c: last(c, "exact/kl_p_pi"), True),
    "KL(π‖a) end": (lambda c: last(c, "exact/kl_pi_a"), True),
    "E_π[φ] end": (lambda c: last(c, "exact/E_phi"), False),
    "H(π) end": (lambda c: last(c, "exact/entropy"), False),
}


def matched_readings(level: float) -> dict:
    """Readings where KL(π‖a) first reaches ``level`` (see :func:`common_level`)."""
    return {
        "E_π[φ] at matched KL(π‖a)": (lambda c: at_matched(c, "exact/kl_pi_a", "exact/E_phi", level), False),
        "KL(p‖π) at matched KL(π‖a)": (lambda c: at_matched(c, "exact/kl_pi_a", "exact/kl_p_pi", level), True),
    }


def common_level(results: dict, tuned: dict, cap: float) -> float:
    """The largest KL(π‖a) every method reaches (median over seeds of each run's largest value),
    at most ``cap`` (the target's own KL(p‖a)): where the methods are compared at matched KL."""
    reach = []
    for method, lr in tuned.items():
        tops = sorted(max(v for _, v in c["exact/kl_pi_a"]) for c in results[method][lr].values()
                      if c.get("exact/kl_pi_a"))
        if tops:
            reach.append(tops[len(tops) // 2])
    return min([cap, *reach])


def summarise(results: dict, ref: dict, tune_on: str, samples: int) -> tuple[dict, dict]:
    """Per method at its best learning rate: per-seed readings, their estimates, the curves."""
    tuned = {method: best_lr(by_lr, READINGS[tune_on][0]) for method, by_lr in results.items()}
    level = common_level(results, tuned, ref["kl_p_a"])
    ref["matched_kl_pi_a"] = level
    readings = {**READINGS, **matched_readings(level)}
    methods, curves = {}, {}
    for method, by_lr in results.items():
        lr = tuned[method]
        runs = by_lr[lr]
        seeds = {label: per_seed(runs, read) for label, (read, _) in readings.items()}
        methods[method] = {"best_lr": lr, "lrs": sorted(by_lr), "per_seed": seeds,
                           "metrics": {label: estimate([v for v in vals.values() if not math.isnan(v)])
                                       for label, vals in seeds.items()},
                           "tuned_on": tune_on}
        curves[method] = {seed: {"samples": [s * samples for s, _ in c.get("exact/kl_p_pi", [])],
                                 **{k: [v for _, v in c.get(f"exact/{k}", [])]
                                    for k in ("kl_p_pi", "kl_pi_a", "E_phi", "entropy")}}
                          for seed, c in runs.items()}
    return methods, curves


def plot_spec(ref: dict, phi_label: str) -> dict:
    return {"plane": ["kl_pi_a", "E_phi"], "over_samples": ["kl_p_pi", "entropy"],
            "labels": {"kl_pi_a": "KL(π‖a)", "E_phi": f"E_π[{phi_label}]", "kl_p_pi": "KL(p‖π)", "entropy": "H(π)"},
            "reference": {"kl_pi_a": ref["kl_p_a"], "E_phi": ref["E_phi"], "kl_p_pi": 0.0, "entropy": ref["entropy"]},
            "reference_label": "target p (closed form)"}


def analyse_ch2(results: dict, budget: str) -> dict:
    ref = reference("tilt", POINTWISE, CH2_BETA)
    methods, curves = summarise(results, ref, "KL(p‖π) end", BUDGETS[budget]["samples"])
    effects = []
    for method, m in methods.items():
        closed = [1 - v / ref["kl_p_a"] for v in m["per_seed"]["KL(p‖π) end"].values()]
        effects.append(effect(f"{method}: fraction of KL(p‖a) closed at the end (1 − KL(p‖π)/KL(p‖a))", closed,
                              margin=0.9, note="reproduced if the CI lies above 0.9"))
    return {"reference": ref, "methods": methods, "effects": effects, "curves": curves,
            "verdict": combine([e["verdict"] for e in effects]), "plot": plot_spec(ref, "b")}


def analyse_ch3(task: str):
    def analyse(results: dict, budget: str) -> dict:
        kind, pattern, _ = TASKS[task]
        ref = reference(kind, pattern)
        methods, curves = summarise(results, ref, "KL(p‖π) best", BUDGETS[budget]["samples"])
        effects = []
        best = {m: methods[m]["per_seed"]["KL(p‖π) best"] for m in methods}
        for dm in ("DPG", "GDC++"):
            for rl in ("RL-KL", "PPO (Ziegler)", "REINFORCE"):
                if dm in best and rl in best:
                    effects.append(effect(f"best KL(p‖π): {rl} − {dm}", paired(best[rl], best[dm])))
        if "DPG" in methods and "REINFORCE" in methods:
            h = {m: methods[m]["per_seed"]["H(π) end"] for m in ("DPG", "REINFORCE")}
            effects.append(effect("H(π) at the end: DPG − REINFORCE (diversity lost without a KL term)",
                                  paired(h["DPG"], h["REINFORCE"])))
        return {"reference": ref, "methods": methods, "effects": effects, "curves": curves,
                "verdict": combine([e["verdict"] for e in effects]),
                "plot": plot_spec(ref, "b" if task == "pointwise" else "φ")}
    return analyse


def claims() -> list[Claim]:
    budgets = {b: budget_line(b) for b in BUDGETS}
    return [
        Claim("ch2", "thesis ch. 2; Korbak, Perez & Buckley 2022 (arXiv:2205.11275)",
              f"KL-regularised RL with reward b and coefficient β = {CH2_BETA} converges to the Bayesian posterior "
              f"p ∝ a·exp(b/β), the same distribution a distribution-matching (DPG) trainer converges to "
              f"(toy space, b = '{POINTWISE}').",
              lambda budget, seeds: toy_runs("tilt", budget, seeds), analyse_ch2, budgets=budgets),
        Claim("ch3-toy-pointwise", "thesis ch. 3; Korbak et al. 2022 (arXiv:2206.00761), pointwise constraints",
              f"DPG and GDC++ get closer to the target p ∝ a·b (lower KL(p‖π)) than RL-KL, Ziegler PPO and "
              f"REINFORCE, and RL without a KL term loses diversity (toy space, pointwise b = '{POINTWISE}').",
              lambda budget, seeds: toy_runs("pointwise", budget, seeds), analyse_ch3("pointwise"), budgets=budgets),
        Claim("ch3-toy-distributional", "thesis ch. 3; Korbak et al. 2022 (arXiv:2206.00761), distributional constraints",
              f"DPG and GDC++ get closer to the distributional target p ∝ a·exp(λφ), E_p[φ] = {MOMENT}, than RL-KL, "
              f"Ziegler PPO and REINFORCE, and RL without a KL term loses diversity (toy space, φ = '{FEATURE}').",
              lambda budget, seeds: toy_runs("distributional", budget, seeds), analyse_ch3("distributional"),
              budgets=budgets),
    ]
