#!/bin/sh
# A test hook for the fault tests (tests/tests/e2e/faults): one "account" per
# grant, a file WORK_DIR/accounts/GRANT_ID that issue creates and revoke
# removes.
#
# usage: account.sh WORK_DIR ACTION, with the broker's JSON on stdin.
# The change is made first, then the hook sleeps for the seconds in
# WORK_DIR/sleep (if any) before it answers: a broker killed meanwhile has
# changed the target without hearing of it, which is what a restart must
# sort out. Each call is logged to WORK_DIR/calls.log as "ACTION GRANT_ID".
set -eu
work=$1
action=$2
cat > /dev/null
printf '%s %s\n' "$action" "$HOURGLASS_GRANT_ID" >> "$work/calls.log"
case $action in
  issue|renew) : > "$work/accounts/$HOURGLASS_GRANT_ID" ;;
  revoke) rm -f "$work/accounts/$HOURGLASS_GRANT_ID" ;;
esac
if [ -e "$work/sleep" ]; then
  sleep "$(cat "$work/sleep")"
fi
case $action in
  issue|renew)
    printf '{"state":{"account":"%s"},"env":{"CLOUD_KEY":"key-%s"},"verification":{"account":"%s"}}\n' \
      "$HOURGLASS_GRANT_ID" "$HOURGLASS_GRANT_ID" "$HOURGLASS_GRANT_ID"
    ;;
  revoke)
    printf '{"verification":{"removed":"%s"}}\n' "$HOURGLASS_GRANT_ID"
    ;;
esac
