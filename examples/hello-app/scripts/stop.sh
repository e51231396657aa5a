#!/bin/sh
# ApplicationStop runs the PREVIOUS revision's copy of this script (nothing on a first deploy).
set -eu
. "$(dirname "$0")/env.sh"
pidfile="$state/hello.pid"
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "stopping hello-app (pid $(cat "$pidfile"))"
    kill "$(cat "$pidfile")"
else
    echo "hello-app is not running"
fi
rm -f "$pidfile"
