#!/bin/sh
set -eu
. "$(dirname "$0")/env.sh"
echo "deploying ${APPLICATION_NAME} (${DEPLOYMENT_ID}) to group ${DEPLOYMENT_GROUP_NAME}"
mkdir -p "$state"
