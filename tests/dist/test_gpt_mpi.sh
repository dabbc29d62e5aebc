#!/usr/bin/env bash
# `gpt train` data-parallel under mpirun (examples/gpt/dist.c), end to end, one group of checks
# per CTest entry (gpt_mpi.<case>):
#
#     test_gpt_mpi.sh CASE MPIEXEC GPT CKPT_FIXTURE
#
#   matches     2 ranks after 20 AdamW steps equal 1 process with the same global batch (to the
#               tolerances below), and `mpirun -np 1` is the plain program, bitwise
#   repeat      a 2-rank run repeats bitwise, and stopped and resumed on 2 ranks it ends bitwise
#               where the uninterrupted run did
#   resume      stopped on 2 ranks and resumed on 1, and the reverse, end equal to an
#               uninterrupted run (same tolerances)
#   validation  the validation loss of 2 and 3 ranks equals 1 process's to rounding
#   failures    a bad flag or a missing file on one rank, a bad flag on every rank, an output
#               another run holds: each ends the job with one message, before any step
#   refusals    other settings or data on one rank, and what several ranks cannot do
#   killed      a rank killed in the middle of training ends the job; the checkpoint resumes
#   signals     SIGTERM to one rank stops every rank after one step with one save, and the run
#               resumed ends bitwise where an uninterrupted run did; Ctrl-C to mpirun ends the
#               job with a whole checkpoint
#
# Tolerances (the same as tests/dist/test_dist.c's, for the same reasons): 2 ranks and 1 process
# compute the gradients of the same global batch with sums associated differently, so every
# step differs in the last bits and 20 steps carry that on: 1e-5 absolute on every parameter
# (1/200 of one AdamW step of lr 2e-3; measured about 1.2e-7), except the key biases, whose
# exact gradient is zero, so that both runs follow rounding noise, which AdamW turns into steps
# of up to lr: those are held to lr, 2e-3 (measured about 3e-6). Tiny models: each case takes a
# few seconds, most of it mpirun's start.
set -u
case=$1
mpiexec=$2
bin=$(realpath "$3")
fix=$(realpath "$4")
work=$(mktemp -d)
cleanup() { jobs -p | xargs -r kill -9 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cd "$work" || exit 1
fails=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }
check() { if [ "$2" -eq 0 ]; then ok "$1"; else bad "$1"; fi; }
flags=()
if "$mpiexec" --version 2>&1 | grep -qE "Open MPI|OpenRTE"; then
  flags+=(--oversubscribe)
  [ "$(id -u)" -eq 0 ] && flags+=(--allow-run-as-root)
fi
# mpi N ARGS...: gpt ARGS on N ranks (ARGS may hold ':' for a rank of its own), 60 s at most
mpi() { local n=$1; shift; timeout 60 "$mpiexec" "${flags[@]}" -n "$n" "$@"; }
# mpi_bg N ARGS...: the same in the background, $! its pid (timeout's: it passes signals on)
mpi_bg() { local n=$1; shift; timeout 60 "$mpiexec" "${flags[@]}" -n "$n" "$@" & }
# expect NAME WANT_RC PATTERN -- CMD...: the status and a line of the output matching PATTERN
expect() {
  local name=$1 want=$2 pat=$3; shift 4
  local t0=$SECONDS
  "$@" >out.log 2>&1; local rc=$?
  if [ "$rc" -eq "$want" ] && grep -q -- "$pat" out.log; then ok "$name ($((SECONDS - t0)) s)"; else
    bad "$name (rc $rc, want $want, pattern '$pat'; output:)"; sed 's/^/     /' out.log; fi
}
meta() { # meta FILE KEY: a metadata value, from the JSON header
  local n; n=$(od -An -t u8 -N 8 "$1" | tr -d ' ')
  head -c $((8 + n)) "$1" | tail -c "$n" | grep -o "\"$2\":\"[^\"]*\"" | sed 's/.*:"\(.*\)"/\1/'
}
same() { "$fix" compare "$1" "$2" 1e-5 2e-3 | sed 's/^/     /'; return "${PIPESTATUS[0]}"; }
# wait_for FILE PATTERN: until FILE has a line matching PATTERN (20 s at most)
wait_for() { for _ in $(seq 400); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done; return 1; }
tiny=(--dim 16 --layers 1 --heads 2 --context 16 --batch 4 --warmup 2 --eval-tokens 512)
printf 'the quick brown fox jumps over the lazy dog. %.0s' $(seq 300) >data.txt
export SL_NUM_THREADS=1

case $case in
matches)
  "$bin" train "${tiny[@]}" --steps 20 --out one.ckpt 2>/dev/null
  check "1 process, 20 steps" $?
  expect "2 ranks, 20 steps" 0 "2 ranks x 1 thread" -- mpi 2 "$bin" train "${tiny[@]}" --steps 20 --out two.ckpt
  [ "$(grep -c "^done: 20 steps" out.log)" -eq 1 ] && [ "$(grep -c "^gpt train:" out.log)" -eq 1 ]
  check "... rank 0 alone prints (one header, one summary)" $?
  same one.ckpt two.ckpt; check "2 ranks equal 1 process (1e-5; key biases 2e-3)" $?
  l1=$(grep -o "last step [0-9.]*" out.log)
  "$bin" train "${tiny[@]}" --steps 20 --out one.ckpt 2>one.log
  [ -n "$l1" ] && grep -q "$l1" one.log; check "the printed global mean loss is 1 process's ($l1)" $?
  [ ! -e two.ckpt.lock ] && [ -z "$(ls two.ckpt.tmp.* 2>/dev/null)" ]
  check "no lock or temporary file is left" $?
  expect "mpirun -np 1" 0 "done: 20 steps" -- mpi 1 "$bin" train "${tiny[@]}" --steps 20 --out np1.ckpt
  cmp -s one.ckpt np1.ckpt; check "... is bitwise the plain program" $?
  ;;
repeat)
  mpi 2 "$bin" train "${tiny[@]}" --steps 20 --out a.ckpt 2>/dev/null; check "2 ranks, run 1" $?
  mpi 2 "$bin" train "${tiny[@]}" --steps 20 --out b.ckpt 2>/dev/null; check "2 ranks, run 2" $?
  cmp -s a.ckpt b.ckpt; check "a 2-rank run repeats bitwise" $?
  mpi 2 "$bin" train "${tiny[@]}" --steps 20 --stop-after 8 --out part.ckpt 2>/dev/null
  expect "2 ranks: stopped at step 8, resumed on 2" 0 "resuming part.ckpt at step 8" \
    -- mpi 2 "$bin" train --resume part.ckpt --out resumed.ckpt
  cmp -s a.ckpt resumed.ckpt; check "... ends bitwise where the uninterrupted run did" $?
  ;;
resume)
  "$bin" train "${tiny[@]}" --steps 20 --data data.txt --out full.ckpt 2>/dev/null
  check "1 process, 20 steps, uninterrupted" $?
  mpi 2 "$bin" train "${tiny[@]}" --steps 20 --data data.txt --stop-after 10 --out two.ckpt 2>/dev/null
  [ "$(meta two.ckpt train.step)" = 10 ]; check "2 ranks stop (and save) after 10 steps" $?
  expect "... resumed on 1 process" 0 "done: 10 steps" -- "$bin" train --resume two.ckpt --out 2to1.ckpt
  same full.ckpt 2to1.ckpt; check "2 -> 1 ranks ends equal to the uninterrupted run" $?
  "$bin" train "${tiny[@]}" --steps 20 --data data.txt --stop-after 10 --out one.ckpt 2>/dev/null
  expect "1 process stops after 10 steps, resumed on 2 ranks" 0 "resuming one.ckpt at step 10" \
    -- mpi 2 "$bin" train --resume one.ckpt --out 1to2.ckpt
  grep -q "resuming on the run's --data data.txt" out.log; check "... on the run's data" $?
  same full.ckpt 1to2.ckpt; check "1 -> 2 ranks ends equal to the uninterrupted run" $?
  expect "... resumed on 3 ranks (rows 1, 1, 2)" 0 "3 ranks x 1 thread" \
    -- mpi 3 "$bin" train --resume one.ckpt --out 1to3.ckpt
  same full.ckpt 1to3.ckpt; check "1 -> 3 ranks ends equal to the uninterrupted run" $?
  ;;
validation)
  # The same model on 1, 2 and 3 ranks: --warmup 2^40 makes the learning rate 2e-3 / 2^40
  # (steps of 2e-15), so the parameters of the runs agree to far below what changes a loss,
  # and what is compared is the validation alone. 25 windows of 16 (--eval-tokens 400):
  # 12 and 13 on 2 ranks, 8, 8 and 9 on 3.
  v=(--dim 16 --layers 1 --heads 2 --context 16 --batch 4 --eval-tokens 400 --warmup 1099511627776)
  "$bin" train "${v[@]}" --steps 2 --out v1.ckpt 2>v1.log; check "1 process validates" $?
  mpi 2 "$bin" train "${v[@]}" --steps 2 --out v2.ckpt 2>v2.log; check "2 ranks validate" $?
  mpi 3 "$bin" train "${v[@]}" --steps 2 --out v3.ckpt 2>v3.log; check "3 ranks validate" $?
  a=$(meta v1.ckpt train.val_loss) b=$(meta v2.ckpt train.val_loss) c=$(meta v3.ckpt train.val_loss)
  echo "     train.val_loss: 1 process $a, 2 ranks $b, 3 ranks $c"
  awk -v a="$a" -v b="$b" -v c="$c" 'BEGIN { d = a - b; e = a - c; if (d < 0) d = -d; if (e < 0) e = -e;
    exit !(a > 0 && d <= 1e-7 * a && e <= 1e-7 * a) }'
  check "the validation loss of 2 and 3 ranks is 1 process's (relative 1e-7)" $?
  grep -q "on 400 bytes" v1.log && grep -q "on 400 bytes" v2.log && grep -q "on 400 bytes" v3.log
  check "... on the same 400 bytes" $?
  # and on the models of training proper (different by rounding): equal to 1e-6
  "$bin" train "${tiny[@]}" --steps 20 --eval-tokens 400 --out t1.ckpt 2>/dev/null
  mpi 2 "$bin" train "${tiny[@]}" --steps 20 --eval-tokens 400 --out t2.ckpt 2>/dev/null
  a=$(meta t1.ckpt train.val_loss) b=$(meta t2.ckpt train.val_loss)
  echo "     after 20 steps: 1 process $a, 2 ranks $b"
  awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a > 0 && d <= 1e-6 * a) }'
  check "after 20 steps of training, 2 ranks' validation loss is 1 process's (relative 1e-6)" $?
  ;;
failures)
  expect "a bad flag on rank 1 ends the job with rank 1's message" 2 "^rank 1 of 2: gpt: --batch must be in \[1, 65536\], got 0" \
    -- mpi 1 "$bin" train "${tiny[@]}" --steps 20 --out f.ckpt : -n 1 "$bin" train "${tiny[@]}" --steps 20 --batch 0 --out f.ckpt
  grep -q "^gpt: rank 1 of 2 cannot train: every rank stops" out.log && ! grep -q "^step\|^done" out.log
  check "... naming the rank, before any step" $?
  expect "a bad flag on every rank: its message once" 2 "^gpt: unknown argument '--bogus'" \
    -- mpi 2 "$bin" train "${tiny[@]}" --bogus 1
  [ "$(grep -c "unknown argument" out.log)" -eq 1 ]; check "... once, not once per rank" $?
  expect "a missing file on rank 1" 1 "cannot open 'nope.txt'" \
    -- mpi 1 "$bin" train "${tiny[@]}" --steps 20 --data data.txt --out f.ckpt : -n 1 "$bin" train "${tiny[@]}" --steps 20 --data nope.txt --out f.ckpt
  [ ! -e f.ckpt ] && [ ! -e f.ckpt.lock ]; check "... none of them wrote anything" $?
  "$bin" train "${tiny[@]}" --steps 2 --out held.ckpt 2>/dev/null
  exec 9>held.ckpt.lock && flock 9 # as another gpt train writing held.ckpt would
  expect "an output another run holds stops every rank" 1 "held.ckpt is being written by another gpt train" \
    -- mpi 2 "$bin" train "${tiny[@]}" --steps 20 --out held.ckpt
  exec 9>&-
  ;;
refusals)
  expect "another --lr on rank 1" 1 "rank 1: it has --lr 0.001.* where rank 0 has --lr 0.002" \
    -- mpi 1 "$bin" train "${tiny[@]}" --steps 20 --out f.ckpt : -n 1 "$bin" train "${tiny[@]}" --steps 20 --lr 1e-3 --out f.ckpt
  echo "the quick brown fox jumps over the lazy cat. $(cat data.txt)" >other.txt
  expect "another text on rank 1" 1 "rank 1: it has training text of .* where rank 0 has training text of" \
    -- mpi 1 "$bin" train "${tiny[@]}" --steps 20 --data data.txt --out f.ckpt : -n 1 "$bin" train "${tiny[@]}" --steps 20 --data other.txt --out f.ckpt
  [ ! -e f.ckpt ] && [ ! -e f.ckpt.lock ]; check "... none of them wrote anything" $?
  expect "--batch below the number of ranks" 1 "--batch 2 is the global batch, split over the 3 ranks" \
    -- mpi 3 "$bin" train "${tiny[@]}" --batch 2 --out f.ckpt
  expect "dropout on several ranks is refused" 1 "dropout is not supported on several ranks" \
    -- mpi 2 "$bin" train "${tiny[@]}" --dropout 0.1 --out f.ckpt
  expect "eval on several ranks is refused" 2 "only \`gpt train\` runs on several ranks" \
    -- mpi 2 "$bin" eval --ckpt f.ckpt
  mpi 2 "$bin" train --help >help.log 2>&1
  [ $? -eq 0 ] && [ "$(grep -c "^usage: gpt train" help.log)" -eq 1 ]
  check "train --help on 2 ranks: the usage once, status 0" $?
  ;;
killed)
  # rank 1 runs through sh, which writes its pid and becomes gpt (exec): kill -9 that pid
  mpi_bg 1 "$bin" train "${tiny[@]}" --steps 100000 --eval-every 100 --out k.ckpt \
    : -n 1 sh -c 'echo $$ >rank1.pid; exec "$0" "$@"' "$bin" train "${tiny[@]}" --steps 100000 --eval-every 100 --out k.ckpt \
    >k.log 2>&1
  job=$!
  wait_for k.log "^step 300: val loss"; check "training runs, with checkpoints" $?
  t0=$SECONDS
  kill -9 "$(cat rank1.pid)"
  wait $job; rc=$?
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]; check "SIGKILL to rank 1 ends the job (status $rc) in $((SECONDS - t0)) s" $?
  grep -q "exited on signal 9" k.log; check "... and mpirun says which rank died" $?
  grep -A3 "exited on signal 9" k.log | sed 's/^/     /'
  s=$(meta k.ckpt train.step)
  [ -n "$s" ] && [ $((s % 100)) -eq 0 ]; check "the last checkpoint (step $s) is whole" $?
  expect "... and resumes" 0 "done: 1 steps" -- "$bin" train --resume k.ckpt --out k2.ckpt --stop-after 1
  ;;
signals)
  tr=(--dim 16 --layers 1 --heads 2 --context 16 --batch 4 --warmup 2 --eval-tokens 64 --eval-every 50)
  mpi 2 "$bin" train "${tr[@]}" --steps 600 --out full.ckpt 2>/dev/null; check "2 ranks, 600 steps" $?
  mpi_bg 1 "$bin" train "${tr[@]}" --steps 600 --out s.ckpt \
    : -n 1 sh -c 'echo $$ >rank1.pid; exec "$0" "$@"' "$bin" train "${tr[@]}" --steps 600 --out s.ckpt \
    >s.log 2>&1
  job=$!
  wait_for s.log "^step 100: val loss"
  kill -TERM "$(cat rank1.pid)"
  wait $job; rc=$?
  n=$(sed -n "s/.*stopped by SIGTERM after step \([0-9]*\); saved s.ckpt.*/\1/p" s.log)
  [ -n "$n" ] && [ "$(grep -c "stopped by" s.log)" -eq 1 ]
  check "SIGTERM to rank 1 alone stops every rank after step $n, said once (status $rc)" $?
  [ "$(meta s.ckpt train.step)" = "$n" ]; check "... saved once, at step $n" $?
  expect "... resumed on 2 ranks" 0 "resuming s.ckpt at step $n" -- mpi 2 "$bin" train --resume s.ckpt --out s.ckpt
  cmp -s full.ckpt s.ckpt; check "... ends bitwise where the uninterrupted run did" $?
  # Ctrl-C: mpirun passes SIGTERM to every rank, then SIGKILL about a second later (Open MPI's
  # odls_base_sigkill_timeout). The ranks stop after their step and rank 0 saves when that fits
  # in the second (on a loaded machine the save's fsync may not): either way the job ends and
  # c.ckpt is a whole checkpoint, this step's or that of the last evaluation (every 50 steps).
  mpi_bg 2 "$bin" train "${tr[@]}" --steps 100000 --out c.ckpt >c.log 2>&1
  job=$!
  wait_for c.log "^step 100: val loss"
  kill -INT $job
  wait $job; rc=$?
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]; check "SIGINT to mpirun ends the job (mpirun's status $rc)" $?
  n=$(sed -n "s/.*stopped by SIGTERM after step \([0-9]*\); saved c.ckpt.*/\1/p" c.log)
  s=$(meta c.ckpt train.step)
  echo "     the ranks said they saved step ${n:-(none)}; c.ckpt holds step $s"
  [ -n "$s" ] && { [ "$s" = "$n" ] || [ $((s % 50)) -eq 0 ]; }
  check "... c.ckpt holds the step saved or the last evaluation's" $?
  expect "... and it resumes on 2 ranks" 0 "done: 1 steps" \
    -- mpi 2 "$bin" train --resume c.ckpt --out c.ckpt --stop-after 1
  ;;
*)
  echo "test_gpt_mpi.sh: unknown case '$case'"
  exit 2
  ;;
esac
if [ "$fails" -eq 0 ]; then echo "gpt on MPI, $case: all checks passed"; exit 0; fi
echo "gpt on MPI, $case: $fails checks failed"
exit 1
