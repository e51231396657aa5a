#!/bin/sh
# Starts a tiny background "service" that writes a heartbeat for a minute. It keeps running
# after this script exits, as a real service would (the classic `nohup app &`).
set -eu
. /tmp/codedeploy-hello-app/etc/hello.conf
run=/tmp/codedeploy-hello-app/run
mkdir -p "$run"
nohup sh -c "for i in \$(seq 1 30); do echo \"$greeting at \$(date)\" > '$run/heartbeat'; sleep $interval_seconds; done" &
echo $! > "$run/hello.pid"
echo "started hello-app (pid $(cat "$run/hello.pid"))"
