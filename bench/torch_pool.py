#!/usr/bin/env python3
"""bench/torch_pool.py - bench/bench_pool.c's measurement, in PyTorch (CPU).

One iteration: c = a @ b with a, b float32 (N, N), then torch.nn.functional.gelu (erf form) on a
float32 tensor of E elements, as ordinary PyTorch code writes it (fresh outputs every time).
Runs on 1 and on T threads (torch.set_num_threads), interleaved rep by rep, and reports the
median of each part and the T-thread speedup, like bench_pool.

    python3 bench/torch_pool.py [--json] [--reps R] [--n N] [--elems E] [--threads T]
    python3 bench/torch_pool.py --envs [--rounds K]   # the default environment vs tuned

--envs runs the measurement in fresh processes, alternating K times (default 3) between the
caller's environment (the "default" run; the OMP_*/MALLOC_* variables below are removed from
it) and the same with
    OMP_WAIT_POLICY=PASSIVE MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736
(the "tuned" run: OpenMP workers sleep instead of spinning while OpenBLAS works, and glibc
keeps freed memory instead of returning large blocks to the kernel after every op), and
reports for each environment the medians over all K * R iterations.
Debian's python3-torch uses OpenMP for its own parallel loops and OpenBLAS (pthreads) for
matmul.
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_util import TUNED, median, now


def openblas_threads():
    """OpenBLAS's own thread count in this process (torch.set_num_threads does not set it)."""
    try:
        import ctypes
        return ctypes.CDLL("libopenblas.so.0").openblas_get_num_threads()
    except (OSError, AttributeError):
        return None


def measure(args):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(1)
    a = torch.randn(args.n, args.n)
    b = torch.randn(args.n, args.n)
    x = torch.randn(args.elems)
    threads = [1, args.threads]
    times = {t: {"matmul": [], "gelu": [], "iter": []} for t in threads}
    with torch.no_grad():
        for t in threads:  # warm up
            torch.set_num_threads(t)
            c = a @ b
            g = F.gelu(x)
        del c, g
        for _ in range(args.reps):
            for t in threads:
                torch.set_num_threads(t)
                t0 = now()
                c = a @ b
                t1 = now()
                g = F.gelu(x)
                t2 = now()
                del c, g
                times[t]["matmul"].append(t1 - t0)
                times[t]["gelu"].append(t2 - t1)
                times[t]["iter"].append(t2 - t0)
    env = {k: os.environ[k] for k in TUNED if k in os.environ}
    head = {"bench": "torch_pool", "torch": torch.__version__, "env": env,
            "openblas_threads": openblas_threads(), "n": args.n, "elems": args.elems}
    return summarize(head, threads, times)


def summarize(head, threads, times):
    """Medians of the per-iteration times (seconds) in times[threads][part]."""
    med = {t: {k: median(v) for k, v in times[t].items()} for t in threads}
    gflops = 2.0 * head["n"] ** 3 * 1e-9
    return dict(head, reps=len(times[threads[0]]["iter"]), times=times, runs=[
        {"threads": t, "matmul_ms": 1e3 * med[t]["matmul"], "gelu_ms": 1e3 * med[t]["gelu"],
         "iter_ms": 1e3 * med[t]["iter"], "matmul_gflops": gflops / med[t]["matmul"]}
        for t in threads],
        speedup={k: med[threads[0]][k] / med[threads[1]][k] for k in ("matmul", "gelu", "iter")})


def report(r):
    env = " ".join(f"{k}={v}" for k, v in r["env"].items()) or "default environment"
    rounds = f" ({r['rounds']} processes)" if "rounds" in r else ""
    print(f"torch {r['torch']} ({env}; OpenBLAS threads: {r['openblas_threads']}): "
          f"a @ b f32 [{r['n']},{r['n']}] @ [{r['n']},{r['n']}], then gelu on {r['elems']} f32; "
          f"median of {r['reps']}{rounds}")
    print(f"{'threads':>8} {'matmul ms':>12} {'GFLOP/s':>10} {'gelu ms':>12} {'iter ms':>10}")
    for run in r["runs"]:
        print(f"{run['threads']:>8} {run['matmul_ms']:>12.1f} {run['matmul_gflops']:>10.1f} "
              f"{run['gelu_ms']:>12.1f} {run['iter_ms']:>10.1f}")
    s = r["speedup"]
    print(f"speedup {r['runs'][1]['threads']} vs 1 thread: matmul {s['matmul']:.2f}x, "
          f"gelu {s['gelu']:.2f}x, iteration {s['iter']:.2f}x")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--elems", type=int, default=16 << 20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--envs", action="store_true",
                   help="compare the default environment with the tuned one")
    p.add_argument("--rounds", type=int, default=3,
                   help="with --envs: processes per environment, alternating (default 3)")
    args = p.parse_args()

    if not args.envs:
        r = measure(args)
        if args.json:
            print(json.dumps(r))  # with the raw times, for --envs
        else:
            report(r)
        return

    child = [sys.executable, os.path.abspath(__file__), "--json", "--reps", str(args.reps),
             "--n", str(args.n), "--elems", str(args.elems), "--threads", str(args.threads)]
    default_env = {k: v for k, v in os.environ.items() if k not in TUNED}
    envs = (("default", default_env), ("tuned", {**default_env, **TUNED}))
    # Alternate the two environments, one fresh process each, so that both see the same load;
    # then take the medians over every iteration of every round.
    rounds = {name: [] for name, _ in envs}
    for _ in range(args.rounds):
        for name, env in envs:
            out = subprocess.run(child, env=env, check=True, capture_output=True, text=True)
            rounds[name].append(json.loads(out.stdout))
    results = []
    for name, _ in envs:
        rs = rounds[name]
        threads = [run["threads"] for run in rs[0]["runs"]]
        times = {t: {k: [x for r in rs for x in r["times"][str(t)][k]]
                     for k in ("matmul", "gelu", "iter")} for t in threads}
        head = {k: rs[0][k] for k in ("bench", "torch", "env", "openblas_threads", "n", "elems")}
        results.append(dict(summarize(head, threads, times), run=name, rounds=args.rounds))
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "times"} for r in results]))
        return
    for i, r in enumerate(results):
        if i:
            print()
        report(r)
    d, t = results
    print(f"\ndefault / tuned iteration time at {args.threads} threads: "
          f"{d['runs'][1]['iter_ms'] / t['runs'][1]['iter_ms']:.2f}x; at 1 thread: "
          f"{d['runs'][0]['iter_ms'] / t['runs'][0]['iter_ms']:.2f}x")


if __name__ == "__main__":
    main()
