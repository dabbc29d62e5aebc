#!/usr/bin/env bash
# tests/dist/run_mpi.sh — runs a test program on N ranks for CTest:
#
#     run_mpi.sh [--expect-failure TEXT] MPIEXEC N PROGRAM ARGS...
#
# With Open MPI it passes --oversubscribe (more ranks than cores is fine for a test) and, when run
# as root (as CI is), --allow-run-as-root. The job runs under a 120 s `timeout`, so a hang fails.
# --expect-failure: the job must end with a non-zero status (a rank failed, died, or aborted)
# before the timeout, and its output must contain TEXT (unless TEXT is -).
set -uo pipefail
expect=""
expect_failure=0
if [ "${1:-}" = --expect-failure ]; then expect_failure=1; expect=$2; shift 2; fi
mpiexec=$1 np=$2
shift 2
flags=(-n "$np")
if "$mpiexec" --version 2>&1 | grep -qE "Open MPI|OpenRTE"; then
    flags+=(--oversubscribe)
    [ "$(id -u)" -eq 0 ] && flags+=(--allow-run-as-root)
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
start=$SECONDS
timeout 120 "$mpiexec" "${flags[@]}" "$@" >"$out" 2>&1
rc=$?
cat "$out"
echo "run_mpi.sh: $mpiexec ${flags[*]} $*: exit status $rc after $((SECONDS - start)) s"
if [ $rc -eq 124 ]; then echo "run_mpi.sh: FAILED: the job did not end within 120 s (a hang)"; exit 1; fi
if [ $expect_failure -eq 0 ]; then exit $rc; fi
if [ $rc -eq 0 ]; then echo "run_mpi.sh: FAILED: the job was expected to fail but exited 0"; exit 1; fi
if [ "$expect" != - ] && ! grep -qF -- "$expect" "$out"; then
    echo "run_mpi.sh: FAILED: the output does not contain: $expect"
    exit 1
fi
echo "run_mpi.sh: failed as expected"
