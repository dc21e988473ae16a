#!/usr/bin/env bash
# The proof that the test suite does not race the clock: `make test` three
# times in a row while stress-ng keeps both cores busy. A suite that passes
# only on an idle machine fails here; one that waits on conditions (see
# README, "Developing") passes. `make stress-test` runs this after `make setup`,
# so the build is not what gets stressed.
#
# Knobs (environment): STRESS_TEST_RUNS (default 3), STRESS_TEST_CPUS (stress-ng
# --cpu, default 2), STRESS_TEST_COMMAND (default "make test"). The command sees
# STRESS_NG_PID, the pid of the stress-ng that runs meanwhile.
#
# stress-ng runs in a session of its own and is stopped, with all its workers,
# when this script ends for any reason: success, a failed run, Ctrl-C, SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${STRESS_TEST_RUNS:-3}
cpus=${STRESS_TEST_CPUS:-2}
command=${STRESS_TEST_COMMAND:-make test}

if ! command -v stress-ng >/dev/null 2>&1; then
  echo "stress-test: installing Debian's stress-ng"
  if [ "$(id -u)" != 0 ]; then
    echo "stress-test: need root (or: sudo apt-get install stress-ng)" >&2
    exit 1
  fi
  # Another apt may hold the dpkg lock (a shared CI machine): wait for it rather than fail.
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq stress-ng >/dev/null
fi

# setsid: stress-ng and each run lead process groups of their own, so stopping one reaches all
# its processes (stress-ng's workers; make's test runner and everything it started).
setsid stress-ng --cpu "$cpus" --timeout 0 --quiet &
stress_pid=$!
export STRESS_NG_PID=$stress_pid
run_pid=
stop_all() {
  if [ -n "$run_pid" ]; then kill -TERM -- "-$run_pid" 2>/dev/null || true; fi
  kill -TERM -- "-$stress_pid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop_all EXIT
# A run waits in the background (below) so that these traps fire at once, not when it ends.
trap 'exit 130' INT
trap 'exit 143' TERM
echo "stress-test: stress-ng --cpu $cpus running (pid $stress_pid)"

for i in $(seq 1 "$runs"); do
  echo "stress-test: run $i of $runs: $command"
  setsid bash -c "$command" &
  run_pid=$!
  status=0
  wait "$run_pid" || status=$?
  run_pid=
  if [ "$status" != 0 ]; then
    echo "stress-test: run $i of $runs FAILED (exit $status) under stress-ng --cpu $cpus" >&2
    exit 1
  fi
done
echo "stress-test: $runs of $runs runs passed under stress-ng --cpu $cpus"
