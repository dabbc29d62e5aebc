#!/usr/bin/env bash
# fuzz/run.sh BUILD_DIR [SECONDS] — runs fuzz_loaders (built with -DSL_FUZZ=ON in BUILD_DIR):
#   1. every input of the regression corpus (fuzz/corpus/regress: what once went wrong, the two
#      resource bombs among them) and of the seed corpus, once each, under the memory caps;
#   2. SECONDS (default 60) of coverage-guided fuzzing from the seeds, with the dictionary, in a
#      scratch corpus (the committed one is not touched).
# The caps make an input fail that allocates more than 256 MiB at once or grows the process
# past 1 GiB (the bombs asked for 0.5 to 2 GiB), or takes more than 10 s. Exits non-zero on any
# finding, leaving it in the scratch directory it names.
set -euo pipefail
fz=$(realpath "$1")/fuzz/fuzz_loaders
secs=${2:-60}
here=$(cd "$(dirname "$0")" && pwd)
caps=(-rss_limit_mb=1024 -malloc_limit_mb=256 -timeout=10)
work=$(mktemp -d)
echo "== fuzz_loaders: the regression and seed corpora, once each"
"$fz" "${caps[@]}" "$here"/corpus/regress/* "$here"/corpus/seed/* 2>"$work/regress.log" || {
    tail -40 "$work/regress.log"; echo "fuzz: a corpus input failed (log: $work/regress.log)"; exit 1; }
grep -c "^Executed" "$work/regress.log" | xargs echo "inputs run:"
echo "== fuzz_loaders: ${secs}s of fuzzing"
mkdir -p "$work/corpus"
cp "$here"/corpus/seed/* "$work/corpus/"
if ! "$fz" "${caps[@]}" -dict="$here/safetensors.dict" -max_total_time="$secs" \
        -print_final_stats=1 -artifact_prefix="$work/" "$work/corpus" 2>"$work/fuzz.log"; then
    tail -60 "$work/fuzz.log"
    echo "fuzz: a finding (log and input under $work)"
    exit 1
fi
grep -E "^stat::number_of_executed_units|^stat::average_exec_per_sec|^stat::peak_rss_mb" "$work/fuzz.log"
grep -E "^#[0-9]+.*DONE" "$work/fuzz.log" | tail -1
rm -rf "$work"
