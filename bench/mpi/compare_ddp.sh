#!/usr/bin/env bash
# bench/mpi/compare_ddp.sh — the BENCHMARKS.md comparison: the reference GPT step as 1 rank x 2
# threads against 2 ranks x 1 thread, alternating fresh runs of bench_ddp, then the medians of
# the runs' medians.
#
#     bench/mpi/compare_ddp.sh [--rounds 5] [--bin build/bin] [-- bench_ddp flags...]
#
# Prints each run's JSON line as it ends (rounds x 2 lines), then one summary table. Needs
# python3 for the medians. Run from the root of the repository after a Release build.
set -euo pipefail
rounds=5 bin=build/bin
while [ $# -gt 0 ]; do
    case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "usage: $0 [--rounds N] [--bin DIR] [-- bench_ddp flags]" >&2; exit 2 ;;
    esac
done
mpi=(mpirun)
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for r in $(seq "$rounds"); do
    # 1 rank with 2 threads must not be bound to one core (Open MPI binds np <= 2 to cores).
    SL_NUM_THREADS=2 "${mpi[@]}" -np 1 --bind-to none "$bin/bench_ddp" --json "$@" | tee -a "$out"
    SL_NUM_THREADS=1 "${mpi[@]}" -np 2 "$bin/bench_ddp" --json "$@" | tee -a "$out"
done
python3 - "$out" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
keys = ["local_step_ms", "overlap_step_ms", "overlap_tokens_per_s", "after_step_ms",
        "comm_step_ms", "overlap_backward_ms", "overlap_callback_ms", "overlap_finish_ms",
        "after_finish_ms", "local_backward_ms", "done_early", "hidden", "load1"]
print(f"\nmedians over {len(runs) // 2} runs of each (each run: medians of its steps)")
print(f"{'ranks x threads':<16}" + "".join(f"{k:>22}" for k in keys))
for ranks, threads in ((1, 2), (2, 1)):
    sel = [r for r in runs if r["ranks"] == ranks and r["threads"] == threads]
    if sel:
        print(f"{f'{ranks} x {threads}':<16}" +
              "".join(f"{statistics.median(r[k] for r in sel):>22.3f}" for k in keys))
PY
