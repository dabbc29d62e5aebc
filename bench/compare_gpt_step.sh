#!/usr/bin/env bash
# bench/compare_gpt_step.sh — shortlong's training step against tuned eager PyTorch, the same
# model and step (bench/bench_gpt_step.c, bench/torch_gpt.py), in alternating fresh processes:
# shortlong, torch, shortlong, torch, ... for --rounds rounds, so that both see the same load.
#
# Prints each pair, then the median over pairs of torch_ms / shortlong_ms (the speedup), the
# medians of shortlong's step / GEMM floor (each shortlong run measures its own floors: through
# cblas_sgemm, and through the library's own AVX-512 kernel where it uses it), and the medians
# of step time, tokens/s and peak RSS of both.
#
#     bench/compare_gpt_step.sh [--rounds 5] [--bin build/bin/bench_gpt_step]
#         [--python /usr/bin/python3] [--torch-env VAR=VALUE]... [--torch-threads N] [--json]
#         [-- flags for both programs, e.g. --steps 10 --threads 2 --batch 8]
#
# torch runs in the tuned environment issue 6 names (torch_gpt.py sets it itself:
# OMP_WAIT_POLICY=PASSIVE MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736), plus any
# --torch-env settings (e.g. OPENBLAS_CORETYPE=SkylakeX, OpenBLAS's AVX-512 kernels). Both
# programs get the same flags; --threads defaults to the number of CPUs in both, and
# --torch-threads sets torch's alone (torch's matrix products run on OpenBLAS's own threads
# whatever its intra-op thread count, so 1 can be its faster setting).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
rounds=5
bin="$here/../build/bin/bench_gpt_step"
python=/usr/bin/python3
json=0
torch_env=()
torch_flags=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --python) python=$2; shift 2 ;;
        --torch-env) torch_env+=("$2"); shift 2 ;;
        --torch-threads) torch_flags+=(--threads "$2"); shift 2 ;;
        --json) json=1; shift ;;
        --) shift; break ;;
        *) echo "usage: $0 [--rounds N] [--bin PATH] [--python PATH] [--torch-env VAR=VALUE]" \
                "[--torch-threads N] [--json] [-- flags]" >&2
           exit 2 ;;
    esac
done
flags=("$@")
[[ -x "$bin" ]] || { echo "compare_gpt_step.sh: no $bin (build it first)" >&2; exit 1; }

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for ((r = 1; r <= rounds; r++)); do
    "$bin" --json "${flags[@]}" >>"$results"
    env "${torch_env[@]}" "$python" "$here/torch_gpt.py" --json "${flags[@]}" "${torch_flags[@]}" \
        >>"$results"
    [[ $json == 1 ]] || echo "round $r/$rounds done" >&2
done

# Any python does the arithmetic (no torch needed).
python3 - "$results" "$json" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
c = [r for r in rows if r["impl"] == "shortlong"]
t = [r for r in rows if r["impl"] == "torch"]
pairs = list(zip(c, t))
speedup = [b["step_ms"] / a["step_ms"] for a, b in pairs]
to_floor = [a["step_ms"] / a["floor_ms"] for a in c]
to_floor_full = [a["step_ms"] / a["floor_full_ms"] for a in c]
kernel = all("kernel_floor_ms" in a for a in c)
med = statistics.median
summary = {
    "rounds": len(pairs),
    "speedup_vs_torch_median": med(speedup), "speedup_per_pair": speedup,
    "ratio_to_floor_median": med(to_floor), "ratio_to_floor_full_median": med(to_floor_full),
    "shortlong_step_ms_median": med(a["step_ms"] for a in c),
    "torch_step_ms_median": med(b["step_ms"] for b in t),
    "floor_ms_median": med(a["floor_ms"] for a in c),
    "floor_full_ms_median": med(a["floor_full_ms"] for a in c),
    "shortlong_tokens_per_s_median": med(a["tokens_per_s"] for a in c),
    "torch_tokens_per_s_median": med(b["tokens_per_s"] for b in t),
    "shortlong_peak_rss_mib_max": max(a["peak_rss_mib"] for a in c),
    "torch_peak_rss_mib_max": max(b["peak_rss_mib"] for b in t),
    "shortlong_heap_allocs_timed_max": max(a["heap_allocs_timed"] for a in c),
    "threads": c[0]["threads"], "torch_threads": t[0]["threads"],
    "torch_env": t[0]["env"], "sgemm": c[0]["sgemm"],
}
if kernel:
    summary["kernel_floor_ms_median"] = med(a["kernel_floor_ms"] for a in c)
    summary["ratio_to_kernel_floor_median"] = med(a["step_ms"] / a["kernel_floor_ms"] for a in c)
    summary["ratio_to_kernel_floor_full_median"] = med(a["step_ms"] / a["kernel_floor_full_ms"]
                                                       for a in c)
    summary["best_floor_ms_median"] = med(a["best_floor_ms"] for a in c)
    summary["ratio_to_best_floor_median"] = med(a["ratio_to_best_floor"] for a in c)
if sys.argv[2] == "1":
    print(json.dumps(summary))
    sys.exit()
print(f"{'round':>5} {'shortlong ms':>13} {'torch ms':>10} {'speedup':>8} {'floor ms':>9} "
      f"{'step/floor':>10}")
for i, (a, b) in enumerate(pairs):
    print(f"{i + 1:>5} {a['step_ms']:>13.1f} {b['step_ms']:>10.1f} {speedup[i]:>7.2f}x "
          f"{a['floor_ms']:>9.1f} {to_floor[i]:>9.2f}x")
s = summary
print(f"median of per-pair speedups (torch / shortlong): {s['speedup_vs_torch_median']:.2f}x")
print(f"median step / GEMM floor through cblas_sgemm: {s['ratio_to_floor_median']:.2f}x "
      f"(with full attention products: {s['ratio_to_floor_full_median']:.2f}x)")
if kernel:
    print(f"median step / GEMM floor through shortlong's own kernel: "
          f"{s['ratio_to_kernel_floor_median']:.2f}x (with full attention products: "
          f"{s['ratio_to_kernel_floor_full_median']:.2f}x); that floor "
          f"{s['kernel_floor_ms_median']:.1f} ms")
    print(f"median step / the best of both floors (each part on its faster engine): "
          f"{s['ratio_to_best_floor_median']:.2f}x; that floor {s['best_floor_ms_median']:.1f} ms")
print(f"median step: shortlong {s['shortlong_step_ms_median']:.1f} ms "
      f"({s['shortlong_tokens_per_s_median']:.0f} tokens/s), torch {s['torch_step_ms_median']:.1f} ms "
      f"({s['torch_tokens_per_s_median']:.0f} tokens/s); floor {s['floor_ms_median']:.1f} ms")
print(f"peak RSS: shortlong {s['shortlong_peak_rss_mib_max']:.1f} MiB, "
      f"torch {s['torch_peak_rss_mib_max']:.1f} MiB; shortlong heap allocations in timed steps: "
      f"{s['shortlong_heap_allocs_timed_max']}")
print(f"threads: shortlong {s['threads']}, torch {s['torch_threads']}; shortlong's f32 products: "
      f"{s['sgemm']}; torch's environment: "
      + " ".join(f"{k}={v}" for k, v in s["torch_env"].items()))
EOF
