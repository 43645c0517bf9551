"""The mutation score per module, from mutmut's results in mutants/ (run by bench/mutation.sh).

Only the mutants that bench/mutation_targets.txt selects are counted. A mutant counts as
killed when a test failed or timed out under it. Survivors that docs/testing.md lists as
equivalent are shown apart; any other survivor is a missing test.
"""

from __future__ import annotations

import fnmatch
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KILLED = {1, 3, 24, -24, 36, 37, 152, 255}  # mutmut's exit codes for killed, timeout, type-check
SURVIVED = {0, 5, 33}  # tests passed, or no test reaches the function


def targets() -> list[str]:
    lines = (ROOT / "bench" / "mutation_targets.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def equivalents() -> set[str]:
    """Mutant names (in backticks) listed under "Equivalent mutants" in docs/testing.md."""
    path = ROOT / "docs" / "testing.md"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    section = text.partition("### Equivalent mutants")[2]
    return set(re.findall(r"`(core\.[^`\s]+__mutmut_\d+)`", section))


def results() -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for meta in (ROOT / "mutants" / "core").glob("*.py.meta"):
        out.update(json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"])
    return out


def main() -> int:
    patterns, equivalent = targets(), equivalents()
    picked = {k: v for k, v in results().items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)}
    if not picked:
        print("no mutation results in mutants/: run bench/mutation.sh first")
        return 1
    by_module: dict[str, dict] = defaultdict(lambda: {"killed": 0, "survived": [], "other": 0})
    for name, code in sorted(picked.items()):
        row = by_module[name.split(".")[1]]
        if code in KILLED:
            row["killed"] += 1
        elif code in SURVIVED:
            row["survived"].append(name)
        else:  # not run, suspicious, segfault: neither killed nor a clean survivor
            row["other"] += 1
    print(f"{'module':<10} {'mutants':>7} {'killed':>6} {'score':>6} {'equivalent':>10} {'unexplained':>11}")
    unexplained_all: list[str] = []
    totals = [0, 0]
    for module, row in sorted(by_module.items()):
        total = row["killed"] + len(row["survived"]) + row["other"]
        unexplained = [n for n in row["survived"] if n not in equivalent]
        unexplained_all += unexplained
        totals[0] += total
        totals[1] += row["killed"]
        print(f"{module:<10} {total:>7} {row['killed']:>6} {row['killed'] / total:>6.1%} "
              f"{len(row['survived']) - len(unexplained):>10} {len(unexplained):>11}"
              + (f"   ({row['other']} not run or suspicious)" if row["other"] else ""))
    print(f"{'all':<10} {totals[0]:>7} {totals[1]:>6} {totals[1] / totals[0]:>6.1%}")
    if unexplained_all:
        print("\nsurvivors neither killed nor listed as equivalent in docs/testing.md "
              "(see one with: mutmut show NAME):")
        for name in unexplained_all:
            print("  " + name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
