#!/usr/bin/env bash
# Mutation testing of the pure safety/water cores (issue 13) with mutmut.
#
# mutmut copies gateway/ into ./mutants, makes every single-point mutant of gateway/safety/rules.py,
# gateway/safety/interlock.py, gateway/water/recirc.py and gateway/water/cycle.py (a flipped comparison,
# a changed constant, a dropped argument, ...) and runs only the fast unit tests tests/unit/safety and
# tests/unit/water against each one (configuration: [tool.mutmut] in pyproject.toml). A mutant is
# "killed" when some test fails, "survived" when every test still passes: a change nobody would notice.
#
# Usage: scripts/mutation.sh [rules|interlock|recirc|cycle ...]   (default: all four modules)
# Prints killed/total and the score per module, then every surviving mutant as a diff; exits 1 if a
# module scores below MUTATION_MIN_SCORE (default 95 %). Full log: artifacts/mutation/run.log. Takes 10-15 min on
# two cores; MUTATION_JOBS (default 2) sets the number of parallel test processes; MUTATION_REPORT_ONLY=1
# reprints the report of the last run without running anything.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
jobs="${MUTATION_JOBS:-2}"
min_score="${MUTATION_MIN_SCORE:-95}"

declare -A dotted=(
  [rules]=gateway.safety.rules [interlock]=gateway.safety.interlock
  [recirc]=gateway.water.recirc [cycle]=gateway.water.cycle
)
modules=("$@")
[ ${#modules[@]} -gt 0 ] || modules=(rules interlock recirc cycle)
patterns=()
for m in "${modules[@]}"; do
  [ -n "${dotted[$m]:-}" ] || { echo "unknown module '$m' (rules, interlock, recirc, cycle)" >&2; exit 2; }
  patterns+=("${dotted[$m]}.*")
done

# mutmut puts ./mutants first on sys.path; an inherited PYTHONPATH would import the unmutated code.
unset PYTHONPATH
out=artifacts/mutation
mkdir -p "$out"
if [ "${MUTATION_REPORT_ONLY:-0}" != 1 ]; then
  # A fresh copy every time: verdicts cached from older code or older tests would be misleading.
  rm -rf mutants
  echo "mutating ${modules[*]} (log: $out/run.log) ..."
  status=0
  nice -n 10 "$py" -m mutmut run --max-children "$jobs" "${patterns[@]}" 2>&1 | tr '\r' '\n' >"$out/run.log" || status=$?
  if [ "$status" -ne 0 ]; then
    tail -20 "$out/run.log" >&2
    echo "mutmut run failed (exit $status)" >&2
    exit "$status"
  fi
fi

"$py" -m mutmut results --all true >"$out/results.txt"
"$py" - "$out/results.txt" "$min_score" "${patterns[@]}" <<'EOF'
import fnmatch
import sys
from pathlib import Path

from mutmut.mutation.diff_apply import get_diff_for_mutant

results, min_score, patterns = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
status_by_module: dict[str, dict[str, int]] = {}
survivors: list[str] = []
for line in open(results, encoding="utf-8"):
    name, sep, status = line.strip().rpartition(": ")
    if not sep or not any(fnmatch.fnmatch(name, p) for p in patterns):
        continue
    module = name.split(".x")[0]
    counts = status_by_module.setdefault(module, {})
    counts[status] = counts.get(status, 0) + 1
    if status != "killed":
        survivors.append(name)
failed = False
print(f"\n{'module':28} {'killed':>7} {'total':>6} {'score':>7}")
for module, counts in sorted(status_by_module.items()):
    total = sum(counts.values())
    killed = counts.get("killed", 0)
    score = 100.0 * killed / total if total else 100.0
    failed |= score < min_score
    other = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s != "killed")
    print(f"{module:28} {killed:7} {total:6} {score:6.1f}%  {other}")
if survivors:
    print(f"\n{len(survivors)} mutants not killed (each must be equivalent; see README 'Mutation testing'):")
    for name in survivors:
        source = Path(name.split(".x")[0].replace(".", "/") + ".py")
        diff = get_diff_for_mutant(name, path=source)
        changed = [ln for ln in diff.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
        print(f"  {name}")
        for ln in changed:
            print(f"      {ln}")
print(f"\nminimum score {min_score:.0f} %: {'NOT MET' if failed else 'met'}")
sys.exit(1 if failed else 0)
EOF
