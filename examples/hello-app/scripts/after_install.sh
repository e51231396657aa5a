#!/bin/sh
set -eu
. "$(dirname "$0")/env.sh"
echo "revision files in $app:"
find "$app/site" "$app/config" -type f | sort
