#!/bin/sh
set -eu
echo "installed files:"
find /tmp/codedeploy-hello-app/site /tmp/codedeploy-hello-app/etc -type f | sort
