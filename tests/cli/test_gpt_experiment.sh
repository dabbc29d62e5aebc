#!/usr/bin/env bash
# A smoke test of `gpt experiment` (the extrapolation study's harness): a tiny config, 2 methods
# (ALiBi, with the sliding-window control and slope scaling, and KERPLE), 2 seeds, every
# instrument; checks that each output is there and sane: the CSV columns and what the rows
# hold, the report, and that each figure is well-formed SVG (xml_check). A few seconds.
# Usage: test_gpt_experiment.sh GPT XML_CHECK
set -u
bin="$1"
xml="$2"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fails=0
check() { # check NAME CONDITION-EXIT-CODE
  if [ "$2" -eq 0 ]; then echo "ok   $1"; else echo "FAIL $1"; fails=$((fails + 1)); fi
}
out="$work/exp"
"$bin" experiment --methods alibi,kerple --seeds 1,2 --cost 0 --steps 20 --warmup 4 \
  --context 16 --layers 1 --heads 2 --dim 16 --batch 4 --multiples 1,2,4 --eval-tokens 1024 \
  --same-bytes 128 --score-last 8 --distant 1 --out-dir "$out" >"$work/log" 2>&1
check "experiment exits 0" $?
grep -q "expected: about" "$work/log"
check "it prints the expected time after the first run" $?
for f in results.csv summary.csv per_position.csv cost.csv results.md figure.svg same_tokens.svg \
  per_position.svg distant_context.svg cost.svg; do
  [ -s "$out/$f" ]
  check "wrote $f" $?
done

# results.csv: its columns, and one row per (method, seed, length, protocol, variant)
[ "$(head -1 "$out/results.csv")" = "method,seed,train_len,eval_len,multiple,protocol,variant,window,stride,scored_per_window,n_scored,nll,ppl,bits_per_byte,note" ]
check "results.csv has its columns" $?
awk -F, 'NR > 1 && $6 == "nonoverlap" && $7 == "full" { n++; if (!($13 > 1 && $13 < 256 && $11 == 1024 - 1024 % $4)) bad++ }
         END { exit !(n == 12 && !bad) }' "$out/results.csv"
check "a finite non-overlapping perplexity for 2 methods x 2 seeds x 3 lengths, every byte scored" $?
awk -F, 'NR > 1 && $6 == "same_tokens" && $7 == "full" { n++; if ($11 != 128 || $9 != 8 || $10 != 8 || $8 != $4) bad++ }
         END { exit !(n == 12 && !bad) }' "$out/results.csv"
check "same tokens: 128 bytes at every length, stride 8, window = length" $?
awk -F, 'NR > 1 && $6 == "sliding" { n++; if ($9 != 8 || $8 != $4) bad++ } END { exit !(n == 12 && !bad) }' "$out/results.csv"
check "sliding: stride 8 and window named apart" $?
awk -F, 'NR > 1 && $7 == "beyond_1L" { n[$4]++ } END { exit !(n[32] == 4 && n[64] == 4 && !(16 in n)) }' "$out/results.csv"
check "distant-context rows where something lies beyond L (32 and 64, not 16)" $?
awk -F, 'NR > 1 && ($7 == "attn_window_L" || $7 == "slopes_L_over_T") { m[$1]++; if ($7 == "slopes_L_over_T" && $4 == 16) bad++ }
         END { exit !(m["alibi"] == 20 && !("kerple" in m) && !bad) }' "$out/results.csv"
check "ALiBi alone gets the window control and slope scaling (none at L)" $?

# summary.csv: both seeds, min <= mean <= max
awk -F, 'NR == 1 { ok = $7 == "seeds" && $8 == "ppl_mean" && $9 == "ppl_min" && $10 == "ppl_max" && $11 == "ppl_std"; next }
         { n++; if ($7 != 2 || !($9 <= $8 && $8 <= $10) || $11 < 0) bad++ } END { exit !(ok && n > 0 && !bad) }' "$out/summary.csv"
check "summary.csv: 2 seeds per cell, min <= mean <= max" $?

# per_position.csv: the buckets of each window length add up to the bytes scored
awk -F, 'NR == FNR { if (FNR > 1 && $6 == "nonoverlap" && $7 == "full") want[$1 "," $2 "," $4] = $11; next }
         FNR > 1 { got[$1 "," $2 "," $4] += $7; if ($5 >= $6) bad++ }
         END { for (k in want) if (got[k] != want[k]) bad++; exit !(length(want) == 12 && !bad) }' \
  "$out/results.csv" "$out/per_position.csv"
check "per_position.csv: the buckets add up to each length's scored bytes" $?

# cost.csv: one row per run, with its throughput and memory
awk -F, 'NR > 1 { n++; if (!($6 > 0 && $9 > 0 && $4 > 0 && $5 == 20)) bad++ } END { exit !(n == 4 && !bad) }' "$out/cost.csv"
check "cost.csv: 4 runs, each with tokens/s, peak MiB, parameters and 20 steps" $?

grep -q "^## Non-overlapping windows" "$out/results.md" && grep -q "^## Is distant context used" "$out/results.md" \
  && grep -q "^| alibi | .* \[.*-.*\] |" "$out/results.md"
check "results.md: the tables, with the spread over seeds" $?

"$xml" "$out"/*.svg
check "every figure is well-formed SVG" $?
printf '<svg xmlns="http://www.w3.org/2000/svg"><g></svg>' >"$work/bad.svg"
! "$xml" "$work/bad.svg" 2>/dev/null
check "xml_check refuses a broken file" $?
grep -q "<path fill=\"#d62728\" fill-opacity" "$out/figure.svg"
check "figure.svg draws ALiBi's seed band" $?

if [ "$fails" -eq 0 ]; then echo "gpt experiment smoke test: all checks passed"; exit 0; fi
echo "gpt experiment smoke test: $fails checks failed"
cat "$work/log"
exit 1
