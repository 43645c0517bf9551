#!/usr/bin/env bash
# Mutation testing of the core's decision code with mutmut, then the score per module.
#
#   bench/mutation.sh            a fresh run (deletes mutants/ first), then the scores
#   bench/mutation.sh --jobs 1   fewer parallel workers (default: one per CPU core)
#   bench/mutation.sh --score    only print the scores of the last run
#
# Not part of CI: it takes tens of minutes. What is mutated: pyproject.toml [tool.mutmut]
# (files and the test selection) and bench/mutation_targets.txt (functions). How to read the
# result and add a module: docs/testing.md.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=$(nproc)
while [ $# -gt 0 ]; do
  case "$1" in
    --jobs) jobs=$2; shift ;;
    --score) exec python bench/mutation_score.py ;;
    -h|--help) sed -n 2,10p "$0"; exit 0 ;;
    *) echo "bench/mutation.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

python -c "import mutmut" 2>/dev/null || python -m pip install -q -r requirements-mutation.txt

# one pytest session per mutant: one thread each, and the tiny test backbones built once, not per session
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false HYPOTHESIS_PROFILE=mutation
FREEZE_LAB_TEST_BACKBONES=$(mktemp -d "${TMPDIR:-/tmp}/freeze-lab-mutation-XXXXXX")
export FREEZE_LAB_TEST_BACKBONES
trap 'rm -rf "$FREEZE_LAB_TEST_BACKBONES"' EXIT

mapfile -t patterns < <(grep -v '^[[:space:]]*#' bench/mutation_targets.txt | grep -v '^[[:space:]]*$')
rm -rf mutants
mkdir -p mutants
started=$(date +%s)
echo "mutmut run: ${#patterns[@]} target patterns, $jobs workers; log in mutants/run.log"
if ! mutmut run --max-children "$jobs" "${patterns[@]}" > mutants/run.log 2>&1; then
  tail -c 4000 mutants/run.log
  echo "bench/mutation.sh: mutmut run failed (log: mutants/run.log)" >&2
  exit 1
fi
seconds=$(( $(date +%s) - started ))
python bench/mutation_score.py
echo "wall time: $((seconds / 60)) min $((seconds % 60)) s ($jobs workers)"
