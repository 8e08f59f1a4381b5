"""A claim's report: printed summary, ``<budget>.md``, ``<budget>.json`` and ``<budget>.png``."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from benchmarks.repro.stats import Estimate


def verdict_line(claim, analysis: dict) -> str:
    return f"VERDICT {claim.name}: {analysis['verdict']}"


def _md_table(analysis: dict) -> list[str]:
    labels = list(next(iter(analysis["methods"].values()))["metrics"]) if analysis["methods"] else []
    lines = ["| method | best lr (of) | " + " | ".join(labels) + " |", "|---" * (len(labels) + 2) + "|"]
    for method, m in analysis["methods"].items():
        cells = [m["metrics"][label].text() for label in labels]
        grid = ", ".join(f"{x:g}" for x in m["lrs"])
        lines.append(f"| {method} | {m['best_lr']:g} ({grid}) | " + " | ".join(cells) + " |")
    return lines


def markdown(claim, analysis: dict, budget: str, seeds: list[int], command: str) -> str:
    ref = analysis.get("reference") or {}
    lines = [f"# {claim.name}: {analysis['verdict']}", ""]
    if analysis.get("incomplete"):  # a sweep still running: say so before any number
        lines += [f"**Partial report**: {analysis['incomplete']}. The verdict waits for every run.", ""]
    lines += [f"**Claim** ({claim.section}): {claim.sentence}", "",
             f"Budget `{budget}` ({claim.budgets.get(budget, '')}), seeds {seeds}. Regenerate with", "",
             f"    {command}", "",
             "Each cell: mean over seeds [95% CI, Student t]; each method at the learning rate of the shared grid "
             "with the best mean (tuned on " + str(next(iter(analysis["methods"].values()), {}).get("tuned_on", "–"))
             + ").", ""]
    if ref:
        lines += ["Closed-form reference: " + ", ".join(f"{k} = {v:.4g}" for k, v in ref.items()
                                                        if isinstance(v, (int, float)) and math.isfinite(v)), ""]
    lines += _md_table(analysis) + [line for note in analysis.get("notes", []) for line in ("", note)]
    lines += ["", "| effect (positive supports the claim) | mean [95% CI] | margin | verdict |",
                                    "|---|---|---|---|"]
    for e in analysis["effects"]:
        lines.append(f"| {e['name']} | {e['estimate'].text(4)} | {e['margin']:g} | {e['verdict']} |")
    lines += ["", "Verdict rule: reproduced only if every effect's CI lies above its margin; not reproduced if "
              "some effect's CI lies at or below it; inconclusive otherwise."]
    return "\n".join(lines) + "\n"


def _jsonable(x):
    if isinstance(x, Estimate):
        return x.as_dict()
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def plot(claim, analysis: dict, path: Path) -> bool:
    """The (x, y) plane of the trajectories and each curve over samples seen; closed forms dashed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG (pip install .[bench])", file=sys.stderr)
        return False
    spec = analysis.get("plot")
    if not spec or not analysis.get("curves"):
        return bars(claim, analysis, path, plt)
    labels, ref = spec["labels"], spec.get("reference", {})
    panels = spec.get("over_samples", [])
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(4.6 * (1 + len(panels)), 3.8), squeeze=False)
    axes = axes[0]
    x, y = spec["plane"]
    for i, (method, seeds) in enumerate(analysis["curves"].items()):
        color = f"C{i}"
        for j, c in enumerate(seeds.values()):
            lab = method if j == 0 else None
            axes[0].plot(c[x], c[y], color=color, lw=1, alpha=0.8, label=lab)
            for k, key in enumerate(panels):
                axes[k + 1].plot(c["samples"], c[key], color=color, lw=1, alpha=0.8, label=lab)
    if x in ref and y in ref:
        axes[0].plot([ref[x]], [ref[y]], "k*", ms=12, label=spec.get("reference_label", "reference"))
    axes[0].set(xlabel=labels[x], ylabel=labels[y], title=f"{claim.name}: trajectories")
    for k, key in enumerate(panels):
        if key in ref:
            axes[k + 1].axhline(ref[key], color="black", ls="--", lw=0.8)
        axes[k + 1].set(xlabel="samples seen", ylabel=labels[key], title=labels[key])
        if key.startswith("kl"):
            axes[k + 1].set_yscale("symlog", linthresh=0.01)
            axes[k + 1].set_ylim(bottom=0)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def bars(claim, analysis: dict, path: Path, plt) -> bool:
    """Without curves: each method's measurements, mean with the 95% CI, one panel per measurement."""
    methods = analysis.get("methods") or {}
    if not methods:
        return False
    labels = list(next(iter(methods.values()))["metrics"])
    fig, axes = plt.subplots(1, len(labels), figsize=(4.6 * len(labels), 3.8), squeeze=False)
    for ax, label in zip(axes[0], labels):
        ests = [m["metrics"][label] for m in methods.values()]
        means = [e.mean for e in ests]
        err = [[e.mean - e.low if math.isfinite(e.low) else 0 for e in ests],
               [e.high - e.mean if math.isfinite(e.high) else 0 for e in ests]]
        ax.bar(range(len(ests)), means, yerr=err, capsize=3, color=[f"C{i}" for i in range(len(ests))])
        ax.set_xticks(range(len(ests)), list(methods), rotation=30, ha="right", fontsize=7)
        ax.set_title(label, fontsize=9)
    fig.suptitle(f"{claim.name}: mean and 95% CI over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(claim, analysis: dict, out: Path, budget: str, seeds: list[int], command: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(claim, analysis, budget, seeds, command)
    (out / f"{budget}.md").write_text(md)
    payload = {"claim": claim.name, "section": claim.section, "sentence": claim.sentence, "budget": budget,
               "seeds": seeds, "command": command, **{k: v for k, v in analysis.items() if k != "plot"}}
    (out / f"{budget}.json").write_text(json.dumps(_jsonable(payload), indent=1, ensure_ascii=False))
    written = [out / f"{budget}.md", out / f"{budget}.json"]
    if plot(claim, analysis, out / f"{budget}.png"):
        written.append(out / f"{budget}.png")
    return written


def printed(claim, analysis: dict) -> str:
    lines = [f"{claim.name} — {claim.sentence} [{claim.section}]"]
    for method, m in analysis["methods"].items():
        cells = "; ".join(f"{label} {est.text()}" for label, est in m["metrics"].items())
        lines.append(f"  {method} (lr {m['best_lr']:g}): {cells}")
    for e in analysis["effects"]:
        lines.append(f"  effect {e['name']}: {e['estimate'].text(4)} (margin {e['margin']:g}) → {e['verdict']}")
    lines.append(verdict_line(claim, analysis))
    return "\n".join(lines)
