#!/bin/sh
set -eu
echo "deploying ${APPLICATION_NAME} (${DEPLOYMENT_ID}) to group ${DEPLOYMENT_GROUP_NAME}"
mkdir -p /tmp/codedeploy-hello-app/run
