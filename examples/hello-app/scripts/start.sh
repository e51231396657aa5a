#!/bin/sh
# Starts a tiny background "service" that writes a heartbeat for a minute. It keeps running
# after this script exits, as a real service would (the classic `nohup app &`).
set -eu
. "$(dirname "$0")/env.sh"
. "$app/config/hello.conf"
mkdir -p "$state"
nohup sh -c "for i in \$(seq 1 30); do echo \"$greeting at \$(date)\" > '$state/heartbeat'; sleep $interval_seconds; done" >/dev/null 2>&1 &
echo $! > "$state/hello.pid"
echo "started hello-app (pid $(cat "$state/hello.pid")), heartbeat in $state/heartbeat"
