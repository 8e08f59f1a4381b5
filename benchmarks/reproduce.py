"""Reproduce a paper claim: real fits through the lit_align CLI, several seeds, a verdict.

    python benchmarks/reproduce.py --list
    python benchmarks/reproduce.py ch2 --budget quick              # a few minutes on 2 CPU cores
    python benchmarks/reproduce.py ch3-toy --budget cpu --seeds 3  # every claim named ch3-toy*
    python benchmarks/reproduce.py ch4 --budget gpu --device gpu   # one H200, about nine minutes

Each run is ``python -m lit_align fit --config ...`` in a subprocess (the command a user runs),
logging to CSV under ``--runs`` (default ``runs/reproduce/<claim>/<budget>``). A finished run
leaves ``done.json``; started again, a sweep runs only what is missing, and an interrupted fit
continues from its last checkpoint (``--ckpt_path last``). For each claim this prints the claim
with its paper section, each method's measurements as mean [95% CI] over seeds (Student t) and
the verdict, and writes ``<budget>.md``, ``<budget>.json`` and ``<budget>.png`` (with matplotlib:
``pip install .[bench]``) into ``benchmarks/results/<claim>/``.

Verdict: *reproduced* only if the CI of every effect of the claim lies above its margin (0: the
CI excludes no effect); *not reproduced* if one lies at or below it; *inconclusive* otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from benchmarks.repro.claims import all_claims, select  # noqa: E402
from benchmarks.repro.report import printed, write  # noqa: E402
from benchmarks.repro.runner import REPO, RunFailed  # noqa: E402
from benchmarks.repro.sweep import collect, pending, sweep  # noqa: E402

BUDGETS = ("quick", "cpu", "gpu")


def parse_seeds(value: str) -> list[int]:
    """``3`` → seeds 0, 1, 2; ``0,4,7`` → those seeds."""
    try:
        if "," in value:
            return [int(s) for s in value.split(",") if s.strip()]
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes a count (3) or a list (0,1,2), got {value!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"--seeds needs at least one seed, got {value!r}")
    return list(range(count))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("claims", nargs="*", help="claim names (or prefixes: ch3 runs every ch3 claim)")
    p.add_argument("--list", action="store_true", help="list the claims and exit")
    p.add_argument("--seeds", type=parse_seeds, default=[0, 1, 2], help="a count or a comma list (default 3)")
    p.add_argument("--budget", choices=BUDGETS, default="quick")
    p.add_argument("--device", default="cpu", help="the trainer's accelerator: cpu, gpu or auto (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="OMP threads per run (default 1)")
    p.add_argument("--runs", type=Path, default=None, help="runs folder (default runs/reproduce/<claim>/<budget>)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="reports folder")
    p.add_argument("--jobs", type=int, default=1, help="fits at once (default 1; --budget gpu: 8 share one GPU)")
    p.add_argument("--max-runs", type=int, default=None, help="run at most this many fits now, then report")
    p.add_argument("--dry-run", action="store_true", help="print the runs that would be launched and exit")
    p.add_argument("--report-only", action="store_true", help="no new fits: report the runs that are done")
    return p


def list_claims() -> None:
    for claim in all_claims().values():
        print(f"{claim.name:24s} {claim.sentence} [{claim.section}]")
        if claim.needs:
            print(f"{'':24s} needs: {claim.needs}")
        for budget, line in claim.budgets.items():
            print(f"{'':24s} --budget {budget}: {line}")


def run_claim(claim, args) -> str:
    runs = claim.plan(args.budget, args.seeds)
    root = args.runs / claim.name if args.runs else REPO / "runs" / "reproduce" / claim.name / args.budget
    seeds = ",".join(map(str, args.seeds))
    command = f"python benchmarks/reproduce.py {claim.name} --budget {args.budget} --seeds {seeds}"
    if args.dry_run:
        for run in pending(runs, root):
            print(f"{claim.name}: {run.key}: config {run.config}, overrides {sorted(run.overrides)}")
        print(f"{claim.name}: {len(pending(runs, root))} of {len(runs)} runs to do under {root}")
        return "dry run"
    if not args.report_only:
        start = time.time()
        print(f"{claim.name}: {len(pending(runs, root))} of {len(runs)} runs to do under {root}", flush=True)
        sweep(runs, root, args.device, args.threads, args.max_runs, args.jobs)
        print(f"{claim.name}: sweep took {time.time() - start:.0f} s", flush=True)
    left = pending(runs, root)
    results = collect(runs, root)
    if not results:
        print(f"{claim.name}: no finished runs yet; rerun the same command to continue")
        return "not yet run"
    analysis = claim.analyse(results, args.budget)
    if left:
        analysis["verdict"] = "inconclusive"
        analysis["incomplete"] = f"{len(left)} of {len(runs)} runs not done; rerun the command to continue"
        print(f"{claim.name}: {analysis['incomplete']} (partial report)")
    print(printed(claim, analysis), flush=True)
    files = write(claim, analysis, args.out / claim.name, args.budget, args.seeds, command)
    print(f"wrote {', '.join(str(f) for f in files)}")
    return analysis["verdict"]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list:
        list_claims()
        return 0
    if not args.claims:
        parser().error("name a claim (see --list)")
    for claim in select(args.claims):
        try:
            run_claim(claim, args)
        except RunFailed as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
