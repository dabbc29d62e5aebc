#!/usr/bin/env bash
# The extrapolation study (issue 13): does the model use the context past L, which method is best
# at L and at 16L, and what does each cost. `gpt experiment` runs every method (alibi,
# alibi-learned, sinusoidal, rotary, t5, learned, none, kerple, sandwich, fire) for each seed
# with the same data, steps, batch and seed, evaluates each at L .. 16L with every instrument
# (non-overlapping, sliding, same tokens at every length, the distant-context ablation, ALiBi's
# window-L control and slope scaling, the loss by position) and measures each run's cost. This
# script runs it on two corpora, WikiText-2 raw and the built-in synthetic corpus, at two
# training lengths, and collects everything under docs/extrapolation/:
#   docs/extrapolation/<corpus>-L<L>/   results.csv, summary.csv, per_position.csv, cost.csv,
#                                       results.md, figure.svg, same_tokens.svg,
#                                       per_position.svg, distant_context.svg, cost.svg, log.txt
#   docs/extrapolation/study.md         the commands, the commit, the machine's threads and
#                                       the wall time of each invocation
#
#   tools/run-study.sh [--estimate] [--smoke DIR] [DATA_DIR]
#
# DATA_DIR (default ../shared/data/wikitext-2, from the repository root) holds WikiText-2 raw:
# train.txt (or wiki.train.raw), test.txt (or wiki.test.raw); without train, valid.txt is the
# training text. When it is absent the WikiText-2 part is skipped with a message.
# The budget is the environment's (defaults in brackets); size it to the machine with
# --estimate, which measures every method (EST_STEPS steps of training and one full
# evaluation each) and prints the expected time of every invocation, then stops:
#   LENGTHS [64 256]          training lengths L
#   SEEDS [1,2,3]
#   STEPS [1500] WARMUP [100] TOKENS_PER_STEP [4096]: batch = TOKENS_PER_STEP / L, so that
#                             every length trains on the same bytes per step
#   LAYERS [4] DIM [128] HEADS [4] LR [2e-3]
#   MULTIPLES [1,2,4,8,16]    evaluation lengths, in L
#   EVAL_TOKENS [32768]       bytes evaluated per length (non-overlapping, sliding)
#   SAME_BYTES [8192]         bytes the same-tokens protocol scores per length
#   DISTANT [1,4]             the distant-context ablation's k (input beyond k L replaced)
#   METHODS [all]  CORPORA [wikitext2 builtin]  THREADS [the pool's default]  EST_STEPS [30]
# --smoke DIR runs a tiny budget (a minute or two) into DIR instead, to check the script.
set -euo pipefail
cd "$(dirname "$0")/.."
estimate=0
smoke=""
data=../shared/data/wikitext-2
while [ $# -gt 0 ]; do
    case "$1" in
    --estimate) estimate=1 ;;
    --smoke) smoke="$2"; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) data="$1" ;;
    esac
    shift
done
LENGTHS=${LENGTHS:-64 256}
SEEDS=${SEEDS:-1,2,3}
STEPS=${STEPS:-1500}
WARMUP=${WARMUP:-100}
TOKENS_PER_STEP=${TOKENS_PER_STEP:-4096}
LAYERS=${LAYERS:-4}
DIM=${DIM:-128}
HEADS=${HEADS:-4}
LR=${LR:-2e-3}
MULTIPLES=${MULTIPLES:-1,2,4,8,16}
EVAL_TOKENS=${EVAL_TOKENS:-32768}
SAME_BYTES=${SAME_BYTES:-8192}
DISTANT=${DISTANT:-1,4}
CORPORA=${CORPORA:-wikitext2 builtin}
EST_STEPS=${EST_STEPS:-30}
out=docs/extrapolation
if [ -n "$smoke" ]; then
    LENGTHS="16 32" SEEDS=1,2 STEPS=20 WARMUP=4 TOKENS_PER_STEP=128 LAYERS=1 DIM=16 HEADS=2
    EVAL_TOKENS=2048 SAME_BYTES=256 DISTANT=1 MULTIPLES=1,2,4 out="$smoke"
fi

cmake -S . -B build >/dev/null && cmake --build build -j --target gpt >/dev/null
gpt=./build/bin/gpt
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ "$estimate" = 1 ] || mkdir -p "$out"

# The WikiText-2 files: train (or valid) and test, under either naming.
pick() { for f in "$@"; do [ -r "$data/$f" ] && { echo "$data/$f"; return 0; }; done; return 0; }
wt_train=$(pick train.txt wiki.train.raw valid.txt wiki.valid.raw)
wt_test=$(pick test.txt wiki.test.raw)

study="$out/study.md"
if [ "$estimate" = 0 ]; then
    {
        echo "# The extrapolation study: commands and times"
        echo
        echo "Run by tools/run-study.sh at commit $commit, $(date -u '+%Y-%m-%d %H:%M UTC'), on"
        echo "$(nproc) CPUs (${THREADS:-all} threads). Each invocation's outputs are in its"
        echo "directory; its log.txt has the training and evaluation lines."
        echo
    } >"$study"
fi

for corpus in $CORPORA; do
    files=()
    case "$corpus" in
    wikitext2)
        if [ -z "$wt_train" ] || [ -z "$wt_test" ]; then
            echo "run-study: skipped WikiText-2: no training text (train.txt, wiki.train.raw, valid.txt)"
            echo "  and test text (test.txt, wiki.test.raw) in '$data'. Pass its directory as the argument."
            [ "$estimate" = 1 ] || echo "- WikiText-2: skipped, not found in \`$data\`." >>"$study"
            continue
        fi
        files=(--train "$wt_train" --valid "$wt_test")
        ;;
    builtin) ;;
    *) echo "run-study: unknown corpus '$corpus' (wikitext2, builtin)" >&2; exit 2 ;;
    esac
    for L in $LENGTHS; do
        batch=$((TOKENS_PER_STEP / L))
        [ "$batch" -ge 1 ] || batch=1
        args=("${files[@]}" --context "$L" --batch "$batch" --steps "$STEPS" --warmup "$WARMUP"
            --layers "$LAYERS" --dim "$DIM" --heads "$HEADS" --lr "$LR" --multiples "$MULTIPLES"
            --eval-tokens "$EVAL_TOKENS" --same-bytes "$SAME_BYTES" --distant "$DISTANT"
            --seeds "$SEEDS" --cost 1)
        [ -n "${METHODS:-}" ] && args+=(--methods "$METHODS")
        [ -n "${THREADS:-}" ] && args+=(--threads "$THREADS")
        if [ "$estimate" = 1 ]; then
            echo "== $corpus, L = $L"
            "$gpt" experiment "${args[@]}" --estimate "$EST_STEPS" 2>/dev/null
            continue
        fi
        dir="$out/$corpus-L$L"
        mkdir -p "$dir"
        echo "run-study: $corpus, L = $L -> $dir"
        start=$(date +%s)
        "$gpt" experiment "${args[@]}" --out-dir "$dir" >/dev/null 2>"$dir/log.txt"
        took=$(($(date +%s) - start))
        {
            echo "- $corpus, L = $L: $((took / 60)) min $((took % 60)) s"
            echo
            echo '  ```sh'
            echo "  ./build/bin/gpt experiment ${args[*]} --out-dir $dir"
            echo '  ```'
            echo
        } >>"$study"
        echo "run-study: $corpus, L = $L done in $((took / 60)) min $((took % 60)) s"
    done
done
[ "$estimate" = 1 ] || echo "run-study: wrote $out/ (study.md lists the commands and times)"
