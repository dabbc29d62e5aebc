#!/usr/bin/env python3
"""bench/torch_attention.py - bench/bench_attention.c's measurement, in eager PyTorch (CPU).

Causal ALiBi attention with explicit math, as PyTorch code writes it without a fused kernel:

    s = (q @ k.transpose(-1, -2)) * scale + bias      # bias (H, T, T) = -m_h (i - j)
    p = torch.softmax(s.masked_fill(mask, -inf), -1)  # mask (T, T): j > i
    out = p @ v;  out.backward(gout)                  # dq, dk, dv

q, k, v, gout float32 (B, H, T, D); bias and mask built once, outside the timing (like
bench_attention's "composed" variant). Medians of --reps runs after --warmup runs (default 3:
with the tuned allocator the heap grows over the first two or three iterations, which take 3-5x
longer), forward and forward + backward; GFLOP/s in useful FLOPs (6 products of 2 B H T^2 D,
halved for causal), as in bench_attention. extra_bytes: the peak resident memory over all the
iterations (VmHWM, reset through /proc/self/clear_refs; the tuned allocator keeps what it
grew) above what was resident before them, minus the output and the gradients of q, k, v, plus
the bias and mask tensors: what the method holds beyond its inputs and results.

By default the script re-runs itself in the tuned environment the issue names:
    OMP_WAIT_POLICY=PASSIVE MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736
(--as-is: measure in the environment as it is). Debian's python3-torch lives in the system
Python:

    /usr/bin/python3 bench/torch_attention.py [--T N] [--B 1] [--H 8] [--D 64] [--reps 5]
                                              [--warmup 3] [--threads 2] [--limit-gib 6] [--json]

Without --T: T = 512, 1024, 2048, 4096, 8192, 16384, skipping those where six (B, H, T, T) f32
tensors, about what is alive at the peak, would need more than --limit-gib (the tuned
allocator's resident growth is larger still: 9.5 GiB at T = 4096).
"""
import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_util import (TUNED, alibi_slopes, enter_tuned_env, import_torch, median,
                        now, tuned_env)

SIZES = [512, 1024, 2048, 4096, 8192, 16384]


def rss_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(args, T):
    import torch

    B, H, D = args.B, args.H, args.D
    torch.manual_seed(1)
    q = torch.randn(B, H, T, D, requires_grad=True)
    k = torch.randn(B, H, T, D, requires_grad=True)
    v = torch.randn(B, H, T, D, requires_grad=True)
    gout = torch.randn(B, H, T, D)
    pos = torch.arange(T)
    dist = (pos[:, None] - pos[None, :]).float()                      # (T, T): i - j
    bias = -torch.tensor(alibi_slopes(H))[:, None, None] * dist        # (H, T, T)
    mask = pos[None, :] > pos[:, None]                                 # (T, T): j > i
    del dist
    scale = 1 / math.sqrt(D)

    def iteration():
        t0 = now()
        s = (q @ k.transpose(-1, -2)) * scale + bias
        p = torch.softmax(s.masked_fill(mask, float("-inf")), dim=-1)
        out = p @ v
        del s, p
        t1 = now()
        out.backward(gout)
        t2 = now()
        return t1 - t0, t2 - t0

    before = rss_bytes("VmRSS")
    have_peak = reset_peak_rss()
    for _ in range(args.warmup):  # the first also allocates the leaves' gradients
        iteration()
    t_fwd, t_fb = [], []
    for _ in range(args.reps):
        for x in (q, k, v):
            x.grad.zero_()
        a, b = iteration()
        t_fwd.append(a)
        t_fb.append(b)
    peak = rss_bytes("VmHWM") if have_peak else None
    tensor = 4 * B * H * T * D
    extra = None
    if peak is not None:
        extra = peak - before - 4 * tensor + bias.numel() * 4 + mask.numel() * mask.element_size()
    useful = 6 * 2.0 * B * H * T * T * D / 2
    fwd, fb = median(t_fwd), median(t_fb)
    return {"bench": "attention", "variant": "torch", "causal": True, "T": T, "B": B, "H": H,
            "D": D, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "env": tuned_env(),
            "fwd_ms": 1e3 * fwd, "fwdbwd_ms": 1e3 * fb, "gflops": 1e-9 * useful / fb,
            "fwd_gflops": 1e-9 * useful / 3 / fwd, "extra_bytes": extra}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--T", type=int, default=0)
    p.add_argument("--B", type=int, default=1)
    p.add_argument("--H", type=int, default=8)
    p.add_argument("--D", type=int, default=64)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--limit-gib", type=float, default=6)
    p.add_argument("--json", action="store_true")
    p.add_argument("--as-is", action="store_true", help="do not re-run in the tuned environment")
    args = p.parse_args()

    enter_tuned_env(args.as_is)
    torch = import_torch("torch_attention.py")
    torch.set_num_threads(args.threads)

    if not args.json:
        env = " ".join(f"{k}={v}" for k, v in os.environ.items() if k in TUNED) or "as is"
        print(f"torch {torch.__version__} attention bench: causal ALiBi, explicit math, f32, "
              f"B={args.B} H={args.H} D={args.D}, {torch.get_num_threads()} threads, "
              f"median of {args.reps} after {args.warmup} warm-up runs ({env})")
        print(f"  {'T':>6} {'fwd ms':>10} {'fwd+bwd ms':>12} {'fwd GF/s':>10} {'GFLOP/s':>10} "
              f"{'extra MiB':>12}")
    for T in ([args.T] if args.T else SIZES):
        if 6 * 4 * args.B * args.H * T * T > args.limit_gib * 2 ** 30:
            r = {"bench": "attention", "variant": "torch", "causal": True, "T": T, "B": args.B,
                 "H": args.H, "D": args.D, "fwd_ms": None, "fwdbwd_ms": None, "gflops": None,
                 "extra_bytes": None, "skipped": "scores would need more than --limit-gib"}
        else:
            r = measure(args, T)
        if args.json:
            print(json.dumps(r), flush=True)
        elif r.get("skipped"):
            print(f"  {T:>6} skipped: {r['skipped']}", flush=True)
        else:
            extra = "-" if r["extra_bytes"] is None else f"{r['extra_bytes'] / 2 ** 20:.1f}"
            print(f"  {T:>6} {r['fwd_ms']:>10.1f} {r['fwdbwd_ms']:>12.1f} {r['fwd_gflops']:>10.1f} "
                  f"{r['gflops']:>10.1f} {extra:>12}", flush=True)


if __name__ == "__main__":
    main()
