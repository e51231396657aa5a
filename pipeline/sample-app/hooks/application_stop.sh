#!/bin/bash
# Stops the previous revision's service (nothing to stop on a fresh instance).
set -euo pipefail
if systemctl list-unit-files sample-app.service >/dev/null 2>&1; then
    systemctl stop sample-app.service || true
fi
