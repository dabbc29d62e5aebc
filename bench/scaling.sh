#!/usr/bin/env bash
# bench/scaling.sh — the training step of shortlong against tuned PyTorch over model sizes, one
# knob at a time from the reference config (d_model 256, 4 layers, 8 heads, context 256,
# batch 8): d_model 256, 512, 1024; layers 4, 8, 12; context 256, 1024, 4096 (batch 2 at 4096,
# where PyTorch's materialised attention would not fit otherwise). Each row runs
# bench/compare_gpt_step.sh (alternating fresh processes of both, --rounds rounds) and reports
# tokens/s, their ratio, the step against the GEMM floor, and peak RSS, from the same run; then
# shortlong's thread scaling (1 against 2 threads, alternating, on the reference config).
#
#     bench/scaling.sh [--rounds 3] [--steps 5] [--torch-env VAR=VALUE]... [--only ROW]
#
# Needs Debian's python3-torch (/usr/bin/python3). Prints a Markdown table.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rounds=3
steps=5
only=""
torch_env=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --torch-env) torch_env+=(--torch-env "$2"); shift 2 ;;
        --only) only=$2; shift 2 ;;
        *) echo "usage: $0 [--rounds N] [--steps N] [--torch-env VAR=VALUE]... [--only ROW]" >&2
           exit 2 ;;
    esac
done
rows=(
    "d256:--dim 256 --layers 4 --context 256 --batch 8"
    "d512:--dim 512 --layers 4 --context 256 --batch 8"
    "d1024:--dim 1024 --layers 4 --context 256 --batch 8"
    "l8:--dim 256 --layers 8 --context 256 --batch 8"
    "l12:--dim 256 --layers 12 --context 256 --batch 8"
    "t1024:--dim 256 --layers 4 --context 1024 --batch 8"
    "t4096:--dim 256 --layers 4 --context 4096 --batch 2"
)
echo "| row | config | shortlong tok/s | torch tok/s | shortlong / torch | step / floor | shortlong RSS MiB | torch RSS MiB |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for row in "${rows[@]}"; do
    name=${row%%:*}
    flags=${row#*:}
    [[ -n "$only" && "$only" != "$name" ]] && continue
    # shellcheck disable=SC2086
    if ! json=$("$here/compare_gpt_step.sh" --rounds "$rounds" --json "${torch_env[@]}" -- \
           --steps "$steps" --warmup 2 --heads 8 $flags); then
        # PyTorch did not finish (at T = 4096 its materialised attention can exceed the
        # machine's memory and be killed): shortlong's row alone, once.
        # shellcheck disable=SC2086
        out=$("$here/../build/bin/bench_gpt_step" --json --steps "$steps" --warmup 2 --heads 8 $flags |
              tail -1)
        python3 - "$name" "$flags" "$out" <<'PY'
import json, sys
name, flags, s = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
print(f"| {name} | `{flags}` | {s['tokens_per_s']:.0f} | did not finish | - | "
      f"{s['ratio_to_floor']:.2f}x | {s['peak_rss_mib']:.0f} | - |")
PY
        continue
    fi
    python3 - "$name" "$flags" "$json" <<'PY'
import json, sys
name, flags, s = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
a, b = s["shortlong_tokens_per_s_median"], s["torch_tokens_per_s_median"]
print(f"| {name} | `{flags}` | {a:.0f} | {b:.0f} | {a / b:.2f}x | "
      f"{s['ratio_to_floor_median']:.2f}x | {s['shortlong_peak_rss_mib_max']:.0f} | "
      f"{s['torch_peak_rss_mib_max']:.0f} |")
PY
done
[[ -n "$only" && "$only" != "threads" ]] && exit 0
# Thread scaling: 1 and 2 threads alternating, the median step of each.
bin="$here/../build/bin/bench_gpt_step"
one=(); two=()
for ((r = 0; r < rounds; r++)); do
    one+=("$("$bin" --json --no-floor --steps "$steps" --threads 1 | python3 -c \
        'import json,sys; print(json.load(sys.stdin)["step_ms"])')")
    two+=("$("$bin" --json --no-floor --steps "$steps" --threads 2 | python3 -c \
        'import json,sys; print(json.load(sys.stdin)["step_ms"])')")
done
python3 - "${one[*]}" "${two[*]}" <<'PY'
import statistics, sys
one = [float(x) for x in sys.argv[1].split()]; two = [float(x) for x in sys.argv[2].split()]
m1, m2 = statistics.median(one), statistics.median(two)
print(f"\nthread scaling (reference config, median of {len(one)} alternating runs): "
      f"1 thread {m1:.1f} ms, 2 threads {m2:.1f} ms: {m1 / m2:.2f}x")
PY
