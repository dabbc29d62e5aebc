#!/usr/bin/env python3
"""tools/ddp_cost_model.py — the cost model of docs/distributed.md: the step time of
data-parallel training on N nodes from a measured compute time and the bytes a step all-reduces.

    python3 tools/ddp_cost_model.py [--params 3225088] [--row-ms 38.7] [--backward-share 0.67]
        [--local-ms 3.0] [--speedup 1,16] [--rows-per-node 8] [--global-rows 512]

Model (one rank per node, a ring all-reduce as libshortlong_dist does it):
  G        bytes per step: 4 per parameter (f32 gradients; the per-parameter counts are noise)
  bucket   a ring over a bucket of S bytes takes 2 (N-1) steps of alpha + S / (N beta):
           t(S) = 2 (N-1) (alpha + S / (N beta))
  comm     every bucket, one after the other on the link: 2 (N-1)/N G / beta + 2 (N-1) n_b alpha,
           n_b = ceil(G / S), plus the local work (copies in and out, the additions), local-ms
  compute  T_c = rows per node x row-ms / speedup (row-ms measured on this machine's 2 cores;
           speedup: how much faster a cluster node is)
  overlap  buckets are reduced while the backward (backward-share of T_c) runs; the last one
           is ready only when the backward ends, so at least t(S_last) stays exposed:
           exposed = max(t(S), comm - backward), step = T_c + exposed; without overlap (the
           reduction after the backward, or a transport that needs the cores the backward uses)
           exposed = comm. Efficiency: T_c / step. Best bucket: of 0.25 to 16 MiB, the one with
           the least exposed time.
Networks: 10 Gb/s Ethernet with TCP (alpha 30 us, beta 1.1 GB/s) and 100 Gb/s InfiniBand or
RoCE with RDMA (alpha 2 us, beta 11 GB/s): typical figures, not measured here.
"""
import argparse
import math

NETWORKS = [("10 Gb/s TCP", 30e-6, 1.1e9), ("100 Gb/s RDMA", 2e-6, 11e9)]
NODES = [8, 16, 32, 64]


def comm_seconds(n, g, s, alpha, beta, local):
    if n == 1:
        return local
    n_b = math.ceil(g / s)
    return 2 * (n - 1) / n * g / beta + 2 * (n - 1) * n_b * alpha + local


def bucket_seconds(n, s, alpha, beta):
    return 0.0 if n == 1 else 2 * (n - 1) * (alpha + s / (n * beta))


def step(n, rows, a, g, s, alpha, beta):
    t_c = rows * a.row_ms * 1e-3 / a.speed
    comm = comm_seconds(n, g, s, alpha, beta, a.local_ms * 1e-3)
    exposed = max(bucket_seconds(n, min(s, g), alpha, beta), comm - a.backward_share * t_c)
    return t_c, comm, max(exposed, 0.0)


BUCKETS_MIB = [0.25, 0.5, 1, 2, 4, 8, 16]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--params", type=int, default=3225088)
    p.add_argument("--row-ms", type=float, default=38.7,
                   help="compute per row of 256 tokens per step on one node (measured)")
    p.add_argument("--backward-share", type=float, default=0.67)
    p.add_argument("--local-ms", type=float, default=3.0,
                   help="the reduction's local work per step (copies, additions), measured")
    p.add_argument("--speedup", default="1,16")
    p.add_argument("--rows-per-node", type=int, default=8)
    p.add_argument("--global-rows", type=int, default=512)
    a = p.parse_args()
    g = 4.0 * a.params
    print(f"G = {g / 1e6:.1f} MB per step; a row {a.row_ms} ms on one node of this machine; "
          f"backward {a.backward_share:.0%} of the compute; the reduction's local work "
          f"{a.local_ms} ms\n")
    for speed in [float(x) for x in a.speedup.split(",")]:
        a.speed = speed
        for title, rows_of in (
                (f"weak scaling, {a.rows_per_node} rows per node", lambda n: a.rows_per_node),
                (f"strong scaling, {a.global_rows} rows in all", lambda n: a.global_rows / n)):
            print(f"Nodes {speed:g}x this machine, {title}:\n")
            print("| network | N | compute ms | comm ms (1 MiB buckets) | efficiency, no overlap | "
                  "efficiency, overlap | best bucket | comm ms | efficiency | tokens/s |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for name, alpha, beta in NETWORKS:
                for n in NODES:
                    rows = rows_of(n)
                    t_c, comm1, exp1 = step(n, rows, a, g, 2**20, alpha, beta)
                    best = min(BUCKETS_MIB,
                               key=lambda mib: step(n, rows, a, g, mib * 2**20, alpha, beta)[2])
                    _, comm, exposed = step(n, rows, a, g, best * 2**20, alpha, beta)
                    tok = n * rows * 256 / (t_c + exposed)
                    print(f"| {name} | {n} | {1e3 * t_c:.1f} | {1e3 * comm1:.1f} | "
                          f"{t_c / (t_c + comm1):.0%} | {t_c / (t_c + exp1):.0%} | {best:g} MiB | "
                          f"{1e3 * comm:.1f} | {t_c / (t_c + exposed):.0%} | {tok:,.0f} |")
            print()


if __name__ == "__main__":
    main()
