#!/usr/bin/env bash
# The whole test suite: the package is what the notebooks export, the notebooks' own tests, then pytest
# (which includes the smoke profile of every experiment notebook).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" MPLBACKEND=Agg PYTHONWARNINGS=ignore::DeprecationWarning
t0=$(date +%s)
echo "== 1/3 nbdev_export leaves sage_paper/ unchanged"
before=$(mktemp -d); cp -r sage_paper "$before/"
nbdev_export
if ! diff -r -q -x __pycache__ "$before/sage_paper" sage_paper; then
  echo "FAIL: sage_paper/ differs from what nbs/ exports: run nbdev_export and commit, or move the hand edit into its notebook." >&2
  exit 1
fi
echo "== 2/3 nbdev_test (the tests inside the notebooks)"
t1=$(date +%s); nbdev_test --do_print; echo "nbdev_test: $(( $(date +%s) - t1 )) s"
echo "== 3/3 pytest"
# one worker process per core (at most 4), each test file whole on one worker: its module fixtures are built once
workers=$(python -c "import os; print(max(1, min(4, len(os.sched_getaffinity(0)))))")
python -m pytest tests -q -p no:cacheprovider -n "$workers" --dist loadfile --durations=20
echo "test suite: $(( $(date +%s) - t0 )) s in all"
