#!/bin/sh
set -eu
test -s /tmp/codedeploy-hello-app/site/index.html
kill -0 "$(cat /tmp/codedeploy-hello-app/run/hello.pid)"
echo "hello-app is up; site at file:///tmp/codedeploy-hello-app/site/index.html"
