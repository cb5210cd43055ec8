"""Two versions of our provider side by side: is a change faster, beyond the machine's drift?

The build machine's speed drifts by up to half within an hour, so two benchmark runs minutes
apart differ by more than most changes do. Here both versions run at once, each in its
production shape on its own database, and their cells alternate: every round measures the
base, then the change, on the same workload and concurrency, and the ratio of their CPU per
operation is taken within the round. The median of the rounds' ratios is the change's effect;
their spread is the noise.

    python -m bench.ab --base HEAD~1 [--only refresh_token] [--concurrency 8,32] [--rounds 4]
    python -m bench.ab --base-options=--no-pin-workers      # this checkout against itself, run otherwise

The base is a git revision checked out apart (a worktree removed at the end), or this checkout
with other `serve` options; the change is this checkout as it is (with `--options`).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.run import ROOT, WORKLOADS, machine, run_cell, start_ours
from oidc_provider.serve import DEFAULT_THREADS


def checkout(revision: str, into: Path) -> Path:
    """The revision's files in a worktree of this repository (removed by `remove_checkout`)."""
    path = into / "code"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), revision],
                   check=True, capture_output=True)
    return path


def remove_checkout(path: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], capture_output=True)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="git revision to compare with (default: this checkout)")
    parser.add_argument("--base-options", default="", help="`serve` options of the base")
    parser.add_argument("--options", default="", help="`serve` options of the change")
    parser.add_argument("--only", default="refresh_token", help="comma-separated workloads")
    parser.add_argument("--concurrency", default="8,32")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per cell")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    args = parser.parse_args(argv)
    workloads = args.only.split(",")
    unknown = [name for name in workloads if name not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads: {', '.join(unknown)} (known: {', '.join(WORKLOADS)})")
    levels = [int(level) for level in args.concurrency.split(",")]
    work = Path(tempfile.mkdtemp(prefix="oidc-ab-"))
    base_code = checkout(args.base, work) if args.base else None
    targets = {}
    failed = False
    try:
        targets["base"] = start_ours(args.workers, args.threads, max(levels), work / "base", base_code,
                                     tuple(shlex.split(args.base_options)))
        targets["change"] = start_ours(args.workers, args.threads, max(levels), work / "change", None,
                                       tuple(shlex.split(args.options)))
        print(f"machine: {machine()}; base {args.base or 'this checkout'} {args.base_options}, "
              f"change: this checkout {args.options}; {args.rounds} rounds of {args.duration:.0f} s cells")
        for workload in workloads:
            for level in levels:
                rounds = []
                for number in range(args.rounds):
                    cells = {name: run_cell(target, workload, level, args.duration) for name, target in targets.items()}
                    errors = [f"{name}: {cell['error']}" for name, cell in cells.items() if "error" in cell]
                    if errors:
                        print(f"{workload} c={level} round {number + 1}: {'; '.join(errors)}")
                        failed = True
                        break
                    rounds.append(cells)
                    print(f"  {workload} c={level} round {number + 1}: CPU ms per op "
                          f"{1000 * cells['base']['cpu_s_per_op']:.3f} -> {1000 * cells['change']['cpu_s_per_op']:.3f}",
                          file=sys.stderr)
                if not rounds:
                    continue
                cpu = [r["change"]["cpu_s_per_op"] / r["base"]["cpu_s_per_op"] for r in rounds]
                throughput = [r["change"]["ops_per_s"] / r["base"]["ops_per_s"] for r in rounds]
                p99 = {name: [r[name]["p99_ms"] for r in rounds] for name in targets}
                print(f"{workload} c={level}: CPU per op, change / base {spread(cpu)}; ops/s {spread(throughput)}; "
                      f"p99 ms base {spread(p99['base'])}, change {spread(p99['change'])}")
    finally:
        for target in targets.values():
            target.stop()
        if base_code:
            remove_checkout(base_code)
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
