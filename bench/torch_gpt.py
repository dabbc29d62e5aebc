#!/usr/bin/env python3
"""bench/torch_gpt.py - bench/bench_gpt_step.c's training step, in eager PyTorch (CPU).

The same model and step as shortlong's sl_gpt with the reference config of issue 6: byte
vocabulary 256, d_model 256, 4 layers, 8 heads, context 256, batch 8; pre-LN blocks
x + attn(ln1(x)), x + mlp(ln2(x)); fused qkv Linear with bias; ALiBi as an explicit (H, T, T)
bias added to the scaled scores, built once, then the causal mask (masked_fill with -inf),
softmax, @ v; a 4x MLP with F.gelu(approximate="tanh"); final LayerNorm; the LM head tied to the
token embedding (logits = x @ wte^T); mean cross-entropy; GPT-2 init (normal(0, 0.02), residual
projections scaled by 1/sqrt(2 n_layers)); AdamW (betas 0.9, 0.95, eps 1e-8, weight decay 0.1 on
the Linear weights only, like shortlong's decay flags), lr 1e-4. All float32.

One step: optimizer.zero_grad(), forward, loss, backward, optimizer.step(). Median over --steps
after --warmup, tokens/s, peak RSS (resource.getrusage ru_maxrss). --eval-T N: one forward
under torch.no_grad() at B = 1, T = N (the bias built for N), with the peak RSS before and after.

--mask-in-bias folds the causal mask into the bias (-inf above the diagonal, one add instead of
add + masked_fill): a faster way to write the same math, for checking that the comparison does
not rest on the slower spelling.

By default the script re-runs itself in the tuned environment issue 6 names:
    OMP_WAIT_POLICY=PASSIVE MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736
(--as-is: measure in the environment as it is). Debian's python3-torch lives in the system
Python:

    /usr/bin/python3 bench/torch_gpt.py [--steps 10] [--warmup 2] [--threads 2] [--json]
        [--eval-T N] [--vocab 256] [--dim 256] [--layers 4] [--heads 8] [--context 256]
        [--batch 8] [--mask-in-bias] [--as-is]
"""
import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_util import (alibi_slopes, enter_tuned_env, import_torch, median, now,
                        peak_rss_mib, tuned_env)


def build(args):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    C, H, V, L = args.dim, args.heads, args.vocab, args.layers
    D = C // H
    slopes = torch.tensor(alibi_slopes(H), dtype=torch.float32)

    def alibi(T):
        """bias (H, T, T) = -m_h (i - j), mask (T, T) true where j > i."""
        pos = torch.arange(T)
        bias = -slopes[:, None, None] * (pos[:, None] - pos[None, :]).float()
        mask = pos[None, :] > pos[:, None]
        if args.mask_in_bias:
            return bias.masked_fill(mask, float("-inf")), None
        return bias, mask

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(C, 3 * C)
            self.proj = nn.Linear(C, C)

        def forward(self, x, bias, mask):
            B, T, _ = x.shape
            q, k, v = self.qkv(x).split(C, dim=2)
            q = q.view(B, T, H, D).transpose(1, 2)                 # (B, H, T, D)
            k = k.view(B, T, H, D).transpose(1, 2)
            v = v.view(B, T, H, D).transpose(1, 2)
            s = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D)) + bias
            if mask is not None:
                s = s.masked_fill(mask, float("-inf"))
            y = torch.softmax(s, dim=-1) @ v                       # (B, H, T, D)
            return self.proj(y.transpose(1, 2).reshape(B, T, C))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(C, 4 * C)
            self.proj = nn.Linear(4 * C, C)

        def forward(self, x):
            return self.proj(F.gelu(self.fc(x), approximate="tanh"))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.attn = nn.LayerNorm(C), Attention()
            self.ln2, self.mlp = nn.LayerNorm(C), MLP()

        def forward(self, x, bias, mask):
            x = x + self.attn(self.ln1(x), bias, mask)
            return x + self.mlp(self.ln2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(V, C)
            self.blocks = nn.ModuleList(Block() for _ in range(L))
            self.ln_f = nn.LayerNorm(C)
            self.cache = {}

        def forward(self, idx):
            T = idx.shape[1]
            if T not in self.cache:
                self.cache = {T: alibi(T)}
            bias, mask = self.cache[T]
            x = self.tok(idx)
            for b in self.blocks:
                x = b(x, bias, mask)
            return self.ln_f(x) @ self.tok.weight.t()              # tied head (B, T, V)

    torch.manual_seed(args.seed)
    model = GPT()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".weight") and p.dim() == 2:          # Linear and embedding
                p.normal_(0.0, 0.02)
                if name.endswith("attn.proj.weight") or name.endswith("mlp.proj.weight"):
                    p.mul_(1 / math.sqrt(2 * L))
            elif name.endswith(".bias") and "ln" not in name:
                p.zero_()
    return model


def train(args):
    import torch
    import torch.nn.functional as F

    model = build(args)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and not n.startswith("tok.")]
    rest = [p for n, p in model.named_parameters() if not (p.dim() == 2 and not n.startswith("tok."))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
    g = torch.Generator().manual_seed(7)
    B, T, V = args.batch, args.context, args.vocab
    idx = torch.randint(0, V, (B, T), generator=g)
    tgt = torch.randint(0, V, (B, T), generator=g)

    def step():
        t0 = now()
        opt.zero_grad()
        loss = F.cross_entropy(model(idx).view(-1, V), tgt.view(-1))
        loss.backward()
        opt.step()
        return now() - t0, loss.item()

    losses = []
    for _ in range(max(args.warmup, 1)):
        losses.append(step()[1])
    times = []
    for _ in range(args.steps):
        t, l = step()
        times.append(t)
        losses.append(l)
    ms = 1e3 * median(times)
    return {"bench": "gpt_step", "impl": "torch", "torch": torch.__version__,
            "vocab": V, "dim": args.dim, "layers": args.layers, "heads": args.heads,
            "context": T, "batch": B, "pos": "alibi", "threads": torch.get_num_threads(),
            "mask_in_bias": args.mask_in_bias,
            "env": tuned_env(["OPENBLAS_CORETYPE"]),
            "steps": args.steps, "warmup": args.warmup,
            "params": sum(p.numel() for p in model.parameters()),
            "step_ms": ms, "step_ms_min": 1e3 * min(times), "tokens_per_s": B * T / (ms * 1e-3),
            "peak_rss_mib": peak_rss_mib(), "loss_first": losses[0], "loss_last": losses[-1]}


def evaluate(args):
    import torch

    model = build(args).eval()
    T = args.eval_T
    idx = torch.randint(0, args.vocab, (1, T), generator=torch.Generator().manual_seed(7))
    rss0 = peak_rss_mib()
    with torch.no_grad():
        t0 = now()
        model(idx)
        sec = now() - t0
    return {"bench": "gpt_eval", "impl": "torch", "torch": torch.__version__, "B": 1, "T": T,
            "threads": torch.get_num_threads(), "mask_in_bias": args.mask_in_bias,
            "env": tuned_env(),
            "forward_ms": 1e3 * sec, "rss_before_mib": rss0, "peak_rss_mib": peak_rss_mib()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--eval-T", type=int, default=0)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--mask-in-bias", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--as-is", action="store_true", help="do not re-run in the tuned environment")
    args = p.parse_args()

    enter_tuned_env(args.as_is)
    torch = import_torch("torch_gpt.py")
    torch.set_num_threads(args.threads)

    r = evaluate(args) if args.eval_T else train(args)
    if args.json:
        print(json.dumps(r), flush=True)
    elif args.eval_T:
        print(f"torch {r['torch']} eval forward, B = 1, T = {r['T']}, no grad, {r['threads']} "
              f"threads: {r['forward_ms']:.1f} ms; peak RSS {r['peak_rss_mib']:.1f} MiB "
              f"({r['rss_before_mib']:.1f} MiB before the forward)")
    else:
        env = " ".join(f"{k}={v}" for k, v in r["env"].items()) or "as is"
        print(f"torch {r['torch']} GPT training step: vocab {r['vocab']}, d_model {r['dim']}, "
              f"{r['layers']} layers, {r['heads']} heads, T {r['context']}, batch {r['batch']}, "
              f"{r['params']} parameters, {r['threads']} threads ({env})")
        print(f"  step: median {r['step_ms']:.1f} ms over {r['steps']} steps -> "
              f"{r['tokens_per_s']:.0f} tokens/s; peak RSS {r['peak_rss_mib']:.1f} MiB")
        print(f"  loss: {r['loss_first']:.4f} at the first step, {r['loss_last']:.4f} at the last")


if __name__ == "__main__":
    main()
