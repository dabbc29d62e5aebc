#!/usr/bin/env bash
# The documented extrapolation experiment (issue 5): one byte-level GPT per positional method,
# trained on WikiText-2's valid.txt at L = 128 and evaluated on test.txt at L .. 16L. About an
# hour on 2 cores. Writes docs/extrapolation/{results.csv,results.md,figure.svg}.
#   tools/run-extrapolation.sh [DATA_DIR]     (default: ../shared/data/wikitext-2)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/wikitext-2}
if [ ! -r "$data/valid.txt" ] || [ ! -r "$data/test.txt" ]; then
    echo "run-extrapolation: skipped: WikiText-2 raw text not found in '$data' (valid.txt, test.txt)."
    echo "  Pass its directory as the argument, or run 'gpt experiment --train F --valid G' on any text."
    exit 0
fi
cmake -S . -B build >/dev/null && cmake --build build -j --target gpt
./build/bin/gpt experiment --train "$data/valid.txt" --valid "$data/test.txt" --context 128 \
    --steps 1500 --warmup 100 --batch 16 --layers 4 --heads 4 --dim 128 --lr 2e-3 \
    --multiples 1,2,4,8,16 --eval-tokens 32768 --seed 1 --out-dir docs/extrapolation
