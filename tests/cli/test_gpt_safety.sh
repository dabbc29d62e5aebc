#!/usr/bin/env bash
# The gpt program's reproducers from issue 10 (items 7-12, and item 9's hostile files): a
# diverging run never replaces a good checkpoint, resume restores the run, hostile inputs fail
# clearly without hanging or eating memory, saves keep what they replace, a signal stops the run
# with a checkpoint, and the messages say what they mean. Tiny models: a few seconds in all.
# Usage: test_gpt_safety.sh GPT_BINARY CKPT_FIXTURE_BINARY
set -u
bin=$(realpath "$1")
fix=$(realpath "$2")
work=$(mktemp -d)
cleanup() { jobs -p | xargs -r kill 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
fails=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }
check() { if [ "$2" -eq 0 ]; then ok "$1"; else bad "$1"; fi; }
# run NAME WANT_RC PATTERN -- CMD...: the exit status and a line of stderr matching PATTERN
run() {
  local name=$1 want=$2 pat=$3; shift 4
  timeout 60 "$@" >"$work/out" 2>"$work/err"; local rc=$?
  if [ "$rc" -eq "$want" ] && grep -q -- "$pat" "$work/err"; then ok "$name"; else
    bad "$name (rc $rc, want $want, pattern '$pat'; stderr:)"; sed 's/^/     /' "$work/err"; fi
}
meta() { # meta FILE KEY: a metadata value, from the JSON header
  local n; n=$(od -An -t u8 -N 8 "$1" | tr -d ' ')
  head -c $((8 + n)) "$1" | tail -c "$n" | grep -o "\"$2\":\"[^\"]*\"" | sed 's/.*:"\(.*\)"/\1/'
}
tiny="--dim 16 --layers 1 --heads 2 --context 16 --batch 4 --warmup 2 --eval-tokens 512"
cd "$work" || exit 1
printf 'the quick brown fox jumps over the lazy dog. %.0s' $(seq 200) >data.txt

# ---------------------------------------------------------------- 7. divergence
"$bin" train $tiny --steps 10 --out good.ckpt 2>/dev/null
check "7: a good checkpoint to protect" $?
cp good.ckpt good.orig
run "7: a diverging run (--lr 1e30 --eval-every 1) is not saved" 1 "is not saved: its loss is not finite" \
  -- "$bin" train $tiny --steps 10 --lr 1e30 --eval-every 1 --out good.ckpt
grep -q "good.ckpt is left as it was" "$work/err"; check "7: ... and says the old checkpoint is kept" $?
cmp -s good.ckpt good.orig; check "7: ... and good.ckpt is unchanged" $?
run "7: the loss is checked before the update" 1 "the training loss is .* at step 2, before its update" \
  -- "$bin" train $tiny --steps 10 --lr 1e30 --eval-every 10 --out div.ckpt
[ ! -e div.ckpt ]; check "7: ... and nothing is written" $?
run "7: resuming good.ckpt with --lr 1e30 is refused (the issue's command)" 2 "--lr 1e+30 conflicts" \
  -- "$bin" train --resume good.ckpt --out good.ckpt --lr 1e30 --eval-every 1
cmp -s good.ckpt good.orig; check "7: ... and good.ckpt is unchanged" $?

# ---------------------------------------------------------------- 8. resume
"$bin" train $tiny --steps 30 --data data.txt --out full.ckpt 2>/dev/null
"$bin" train $tiny --steps 30 --data data.txt --stop-after 12 --out part.ckpt 2>/dev/null
run "8: resume with no flags but --resume and --out" 0 "resuming on the run's --data data.txt" \
  -- "$bin" train --resume part.ckpt --out resumed.ckpt
grep -q "resuming part.ckpt at step 12" "$work/err"; check "8: ... starts at step 12" $?
grep -q "done: 18 steps" "$work/err"; check "8: ... runs to the run's 30 steps" $?
cmp -s full.ckpt resumed.ckpt; check "8: ... and ends bitwise where the uninterrupted run did" $?
[ "$(meta part.ckpt train.steps)" = 30 ] && [ "$(meta part.ckpt train.data)" = data.txt ] &&
  [ "$(meta part.ckpt train.batch)" = 4 ]
check "8: the checkpoint records the run's settings (train.steps, train.data, train.batch)" $?
run "8: conflicting flags are refused, each named" 2 "--context 128 conflicts with the run being resumed (part.ckpt has 16)" \
  -- "$bin" train --resume part.ckpt --out x.ckpt --context 128 --dim 64
grep -q -- "--dim 64 conflicts" "$work/err"; check "8: ... --dim named too" $?
run "8: --steps below the checkpoint's step" 2 "--steps 10: full.ckpt is already at step 30" \
  -- "$bin" train --resume full.ckpt --out x.ckpt --steps 10
run "8: resuming a finished run without --steps" 2 "is complete (step 30 of 30)" \
  -- "$bin" train --resume full.ckpt --out x.ckpt
run "8: --steps beyond the run says the schedule changes" 0 "changes the run's 30 steps" \
  -- "$bin" train --resume full.ckpt --out x.ckpt --steps 32

# ---------------------------------------------------------------- 9. inputs
run "9: --val without --data is read (a missing file is an error)" 1 "cannot open 'nope.txt'" \
  -- "$bin" train $tiny --steps 2 --val nope.txt --out v.ckpt
run "9: --val without --data is used" 0 "val:  data.txt" \
  -- "$bin" train $tiny --steps 2 --val data.txt --out v.ckpt
: >empty.txt
run "9: eval on an empty file" 1 "empty.txt has 0 bytes; evaluation needs at least 2" \
  -- "$bin" eval --ckpt good.ckpt --data empty.txt
run "9: train on an empty file" 1 "too small to split off validation text" \
  -- "$bin" train $tiny --steps 2 --data empty.txt --out e.ckpt
mkfifo fifo
run "9: a FIFO as --ckpt does not hang" 1 "fifo: not a regular file" -- "$bin" eval --ckpt fifo
run "9: a FIFO as --data does not hang" 1 "'fifo' is not a regular file" \
  -- "$bin" eval --ckpt good.ckpt --data fifo
run "9: a FIFO as training --data does not hang" 1 "'fifo' is not a regular file" \
  -- "$bin" train $tiny --steps 2 --data fifo --out f.ckpt
run "9: /dev/zero as --data is refused" 1 "'/dev/zero' is not a regular file" \
  -- "$bin" train $tiny --steps 2 --data /dev/zero --out z.ckpt
truncate -s $(((1 << 30) + 1)) huge.txt
run "9: a text over 1 GiB is refused before it is read" 1 "is 1073741825 bytes, more than the 1073741824" \
  -- "$bin" eval --ckpt good.ckpt --data huge.txt
"$fix" set-meta good.ckpt ctx62.ckpt shortlong.context 4611686018427387904
run "9: a huge context is refused, no SIGFPE" 1 "context 4611686018427387904 outside \[1, 16777216\]" \
  -- "$bin" eval --ckpt ctx62.ckpt
"$fix" set-meta good.ckpt ctx24.ckpt shortlong.context 16777216
"$bin" eval --ckpt ctx24.ckpt --max-tokens 1000 >"$work/out" 2>&1
check "9: the largest context (2^24) evaluates" $?
[ "$(grep -c "^ *[0-9]* .* n/a .*longer than the 1000 evaluated bytes" "$work/out")" -eq 4 ] &&
  grep -q "^134217728 " "$work/out"
check "9: ... its default lengths L..8L, reported n/a" $?
"$fix" gpt v128.ckpt vocab=128 dim=8 heads=2
printf 'abc\310def' >high.txt
run "9: a byte outside a small vocabulary" 1 "byte 200 at offset 3 of high.txt is outside the model's vocabulary of 128" \
  -- "$bin" eval --ckpt v128.ckpt --data high.txt
run "9: ... in a prompt" 1 "byte 200 of the prompt is outside" \
  -- "$bin" sample --ckpt v128.ckpt --prompt "$(printf 'a\310')" --tokens 2
"$fix" add-sparse good.ckpt unused.ckpt optim.huge 2147483648
"$fix" rss rss.txt "$bin" eval --ckpt unused.ckpt --lengths 16 --max-tokens 512 >/dev/null 2>&1
check "9: a checkpoint with a 2 GiB unused tensor evaluates" $?
kib=$(cat rss.txt)
echo "     peak RSS: $kib KiB (the unused tensor is 2097152 KiB)"
[ "$kib" -lt 409600 ]; check "9: ... without reading it (peak RSS below 400 MiB)" $?
"$fix" gpt learned.ckpt pos=learned context=8 dim=32 vocab=256
"$fix" set-meta learned.ckpt bomb.ckpt shortlong.context 16777216
"$fix" rss rss.txt "$bin" eval --ckpt bomb.ckpt >/dev/null 2>"$work/err"
[ $? -eq 1 ] && grep -q "its config implies \[16777216,32\]" "$work/err"
check "6: a learned-position bomb (2 GiB table claimed) fails" $?
kib=$(cat rss.txt)
echo "     peak RSS: $kib KiB"
[ "$kib" -lt 409600 ]; check "6: ... before allocating (peak RSS below 400 MiB)" $?

# ---------------------------------------------------------------- 10. saves
long_dead=$(bash -c 'echo $$')
touch "good.ckpt.tmp.$long_dead.7"
chmod 600 good.ckpt
"$bin" train $tiny --steps 2 --out good.ckpt 2>/dev/null
[ ! -e "good.ckpt.tmp.$long_dead.7" ]; check "10: a stale temp file of a dead process is removed" $?
[ "$(stat -c %a good.ckpt)" = 600 ]; check "10: the file's mode (600) is kept" $?
ln -s good.ckpt link.ckpt
"$bin" train $tiny --steps 2 --seed 5 --out link.ckpt 2>/dev/null
[ -L link.ckpt ] && [ "$(meta good.ckpt shortlong.seed)" = 5 ]
check "10: a symlink is followed: the link stays, its file is replaced" $?
"$bin" train $tiny --steps 100000 --out locked.ckpt >/dev/null 2>"$work/first.log" &
first=$!
for _ in $(seq 200); do grep -q "^step 50/" "$work/first.log" && break; sleep 0.05; done
[ -e locked.ckpt.lock ]; held=$?
run "10: a second train to the same --out fails" 1 "locked.ckpt is being written by another gpt train" \
  -- "$bin" train $tiny --steps 2 --out locked.ckpt
kill -TERM $first; wait $first 2>/dev/null
[ "$held" -eq 0 ] && [ ! -e locked.ckpt.lock ] && [ -e locked.ckpt ]
check "10: the first run held the lock, saved and removed the lock file" $?
: >stale.ckpt.lock # a lock file whose run was killed does not block the next one
run "10: a lock file nobody holds does not block" 0 "done: 2 steps" \
  -- "$bin" train $tiny --steps 2 --out stale.ckpt
run "12: --out in a directory that does not exist fails before training" 1 "cannot write --out nodir/x.ckpt" \
  -- "$bin" train $tiny --steps 2 --out nodir/x.ckpt
grep -q "cannot write --out" "$work/err" && ! grep -q "^step\|gpt train:" "$work/err"
check "12: ... with no step run" $?

# ---------------------------------------------------------------- 11. signals
for sig in INT TERM; do
  "$bin" train $tiny --steps 100000 --out sig.ckpt >/dev/null 2>"$work/sig.log" &
  pid=$!
  for _ in $(seq 200); do grep -q "^step 50/" "$work/sig.log" && break; sleep 0.05; done
  kill -$sig $pid
  wait $pid
  rc=$?
  want=$((128 + $(kill -l $sig)))
  [ "$rc" -eq "$want" ]; check "11: SIG$sig: exit status $want" $?
  grep -q "stopped by SIG$sig after step [0-9]*; saved sig.ckpt" "$work/sig.log"; check "11: SIG$sig: says so" $?
  n=$(sed -n "s/.*stopped by SIG$sig after step \([0-9]*\).*/\1/p" "$work/sig.log")
  [ -n "$n" ] && [ "$(meta sig.ckpt train.step)" = "$n" ]; check "11: SIG$sig: the checkpoint holds step $n" $?
done

# ---------------------------------------------------------------- 12. messages
run "12: --steps 50 without --eval-every trains" 0 "done: 50 steps" -- "$bin" train $tiny --steps 50 --out m.ckpt
run "12: --clip -1 names --clip" 2 "^gpt: --clip must be >= 0, got -1$" -- "$bin" train --clip -1
[ "$(wc -l <"$work/err")" -eq 1 ] && ! grep -q -- "--lr\|--dropout\|--weight-decay" "$work/err"
check "12: ... and no other flag" $?
"$bin" eval --help >"$work/out" 2>"$work/err"
[ $? -eq 0 ] && [ ! -s "$work/err" ] && grep -q "usage: gpt eval" "$work/out"
check "12: eval --help prints the usage, no error, exit 0" $?
"$bin" train $tiny --steps 50 --out m.ckpt >/dev/null 2>"$work/err"
grep -q "^step 50/50 train loss (avg) " "$work/err" &&
  grep -q "done: .* train loss (avg) [0-9.]*, last step [0-9.]*; val loss" "$work/err"
check "12: the two loss figures are labelled" $?

if [ "$fails" -eq 0 ]; then echo "gpt safety: all checks passed"; exit 0; fi
echo "gpt safety: $fails checks failed"
exit 1
