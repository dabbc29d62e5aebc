#!/usr/bin/env bash
# Regenerates fuzz/corpus/seed/ (real small checkpoints) and the generated part of
# fuzz/corpus/regress/ (the inputs that once made a loader misbehave) from a normal build:
#     cmake -S . -B build && cmake --build build -j && bash fuzz/make_corpus.sh build
# The files are committed; rerun this only when the format changes. Inputs the fuzzer finds
# (crash-*, leak-*, oom-*, timeout-*) go into fuzz/corpus/regress/ by hand, once fixed.
set -euo pipefail
build=$(realpath "${1:-build}")
cd "$(dirname "$0")/corpus"
fix="$build/tests/ckpt_fixture"
gpt="$build/bin/gpt"
seed=seed regress=regress
rm -f "$seed"/*.safetensors "$regress"/gen_*.safetensors

# Seeds: the fuzz target's own model (ckpt_fixture's default: vocab 16, context 8, dim 8, one
# layer, two heads, ALiBi), as weights and as a training checkpoint; each other method; f64; and
# what `gpt train` writes (with its train.* metadata).
"$fix" gpt "$seed/gpt_alibi.safetensors"
"$fix" gpt "$seed/gpt_alibi_train.safetensors" train=1
"$fix" gpt "$seed/gpt_t5.safetensors" pos=t5
"$fix" gpt "$seed/gpt_learned.safetensors" pos=learned
"$fix" gpt "$seed/gpt_rotary.safetensors" pos=rotary
"$fix" gpt "$seed/gpt_sinusoidal_f64.safetensors" pos=sinusoidal dtype=f64
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && "$gpt" train --dim 4 --layers 1 --heads 1 --context 8 --batch 2 --steps 2 \
  --eval-tokens 64 --out prog.safetensors >/dev/null 2>&1)
cp "$tmp/prog.safetensors" "$seed/gpt_program_train.safetensors"

# Regressions (issue 10): the two resource bombs, which made sl_gpt_load allocate gigabytes
# before failing (a learned-position table of 2^25 or 2^24 positions; a T5 table of 2^28
# buckets); a context past the cap (the gpt program's SIGFPE); a NaN weight (it loaded).
"$fix" set-meta "$seed/gpt_learned.safetensors" "$regress/gen_bomb_learned_context_2e25.safetensors" \
  shortlong.context 33554432
"$fix" set-meta "$seed/gpt_learned.safetensors" "$regress/gen_bomb_learned_context_2e24.safetensors" \
  shortlong.context 16777216
"$fix" set-meta "$seed/gpt_t5.safetensors" "$tmp/t5.safetensors" shortlong.t5_buckets 268435456
"$fix" set-meta "$tmp/t5.safetensors" "$regress/gen_bomb_t5_buckets.safetensors" \
  shortlong.t5_max_distance 268435457
cp "$tmp/t5.safetensors" "$regress/gen_bad_t5_buckets.safetensors"
"$fix" set-meta "$seed/gpt_alibi.safetensors" "$regress/gen_context_2e62.safetensors" \
  shortlong.context 4611686018427387904
# a NaN in the last float of the data (ln_f.bias, which sl_gpt_save writes last)
cp "$seed/gpt_alibi.safetensors" "$regress/gen_nan_weight.safetensors"
printf '\x00\x00\xc0\x7f' | dd of="$regress/gen_nan_weight.safetensors" bs=1 \
  seek=$(($(stat -c %s "$regress/gen_nan_weight.safetensors") - 4)) conv=notrunc status=none
ls -l "$seed" "$regress"
