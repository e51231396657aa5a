#!/bin/sh
set -eu
. "$(dirname "$0")/env.sh"
test -s "$app/site/index.html"
kill -0 "$(cat "$state/hello.pid")"
echo "hello-app is up; site at file://$app/site/index.html"
