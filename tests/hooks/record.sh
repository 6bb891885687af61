#!/bin/sh
# A test hook for the exec provider (tests/tests/e2e/exec.rs).
#
# usage: record.sh WORK_DIR ACTION, with the broker's JSON on stdin.
# Appends "ACTION <stdin JSON>" to WORK_DIR/calls.log and the environment it
# got to WORK_DIR/env.ACTION, then answers. Files the test creates in WORK_DIR
# change what it does:
#   fail-ACTION   its content goes to stderr and the hook exits 3
#   hang-ACTION   the hook starts a sleep (its pid in WORK_DIR/sleep.pid) and waits for it
set -eu
work=$1
action=$2
input=$(cat)
printf '%s %s\n' "$action" "$input" >> "$work/calls.log"
env > "$work/env.$action"
if [ -e "$work/fail-$action" ]; then
  cat "$work/fail-$action" >&2
  exit 3
fi
if [ -e "$work/hang-$action" ]; then
  sleep 60 &
  echo $! > "$work/sleep.pid"
  wait
fi
n=$(wc -l < "$work/calls.log" | tr -d ' ')
case $action in
  issue|renew)
    printf '{"state":{"account":"acct-%s"},"env":{"ORDERS_CLOUD_KEY":"key-%s-%s","ORDERS_CLOUD_REGION":"eu-west-1"},"public":["ORDERS_CLOUD_REGION"],"verification":{"account":"acct-%s"}}\n' \
      "$HOURGLASS_GRANT_ID" "$action" "$n" "$HOURGLASS_GRANT_ID"
    ;;
  revoke)
    printf '{"verification":{"removed":"acct-%s"}}\n' "$HOURGLASS_GRANT_ID"
    ;;
esac
