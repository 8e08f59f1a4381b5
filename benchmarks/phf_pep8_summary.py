"""Summarise several seeds of ``benchmarks/phf_pep8.py`` (not a test).

Inputs: run folders of ``phf_pep8.py --seed S --out DIR`` (their ``results.json``; a seed may be
split over several folders) and/or ``rows.json`` files (a list of rows that carry ``seed`` and,
optionally, ``note``; a row with a note, e.g. another control-token setting, is its own line).
Writes to ``--out``: ``rows.json`` (every row once, with its seed), ``summary_table.md`` (per
objective: misalignment and held-out LM loss of each seed, mean and standard deviation) and
``score_vs_loss.png`` (each seed as a small marker, the mean as a large one).

    python benchmarks/phf_pep8_summary.py benchmarks/results/phf_pep8_2000/rows.json \\
        benchmarks/results/phf_pep8_2000/seed3 --out benchmarks/results/phf_pep8_2000
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ORDER = ("mle", "filtering", "conditional", "unlikelihood", "rwr", "awr")


def load_rows(paths: list[Path]) -> list[dict]:
    rows, seen = [], set()
    for path in paths:
        if path.is_dir():
            data = json.loads((path / "results.json").read_text())
            found = [{**r, "seed": data["args"]["seed"]} for r in data["rows"]]
        else:
            found = json.loads(path.read_text())
        for r in found:
            key = (r["run"], r["seed"], r.get("note", ""), r["score"], r["lm_loss"])
            if key not in seen:
                seen.add(key)
                rows.append({**r, "note": r.get("note", "")})
    return rows


def group(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows by label: the objective for pretraining runs, ``finetune/<objective>`` for the
    fine-tuning variant (its ``run`` names the objective after ``→``)."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        if r["run"].endswith("(first half)"):
            continue  # the MLE half of the fine-tuning variant, not a run of its own
        label = r["objective"] if r["run"].startswith("pretrain/") else f"finetune/{r['objective']}"
        if r["note"]:
            label += f" ({r['note']})"
        out.setdefault(label, []).append(r)
    def key(label: str) -> tuple:
        objective = label.split(" (")[0].split("/")[-1]
        return label.startswith("finetune"), ORDER.index(objective) if objective in ORDER else 99, label

    return dict(sorted(out.items(), key=lambda kv: key(kv[0])))


def spread(values: list[float]) -> str:
    if len(values) < 2:
        return "–"
    return f"{statistics.stdev(values):.4f}"


def table(groups: dict[str, list[dict]]) -> str:
    lines = ["| objective | seeds | misalignment per seed | mean | sd | LM loss per seed | mean LM loss |",
             "|---|---|---|---|---|---|---|"]
    for label, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        scores, losses = [r["score"] for r in rs], [r["lm_loss"] for r in rs]
        lines.append(f"| {label} | {', '.join(str(r['seed']) for r in rs)} | "
                     f"{' / '.join(f'{s:.4f}' for s in scores)} | {statistics.mean(scores):.4f} | {spread(scores)} | "
                     f"{' / '.join(f'{x:.3f}' for x in losses)} | {statistics.mean(losses):.3f} |")
    return "\n".join(lines)


def plot(groups: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, (label, rs) in enumerate(groups.items()):
        color = f"C{i}"
        ax.scatter([r["lm_loss"] for r in rs], [r["score"] for r in rs], s=18, color=color, alpha=0.5)
        ax.scatter([statistics.mean(r["lm_loss"] for r in rs)], [statistics.mean(r["score"] for r in rs)], s=90,
                   color=color, edgecolor="black", label=f"{label} (n={len(rs)})")
    ax.set_xlabel("held-out LM loss (nats/token)")
    ax.set_ylabel("misalignment (PEP8 violations/char)")
    ax.set_title("PHF on stdlib source: seeds (small) and their mean (large)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", type=Path, help="run folders (results.json) or rows.json files")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    missing = [p for p in args.inputs if not (p.is_file() or (p / "results.json").is_file())]
    if missing:
        raise SystemExit(f"no results: {', '.join(map(str, missing))} (a run folder with results.json, or a rows.json)")
    rows = load_rows(args.inputs)
    if not rows:
        raise SystemExit("no results.json in the folders given")
    groups = group(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rows.json").write_text(json.dumps(rows, indent=1) + "\n")
    text = table(groups)
    (args.out / "summary_table.md").write_text(text + "\n")
    plot(groups, args.out / "score_vs_loss.png")
    print(text)


if __name__ == "__main__":
    main()
