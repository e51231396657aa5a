#!/bin/bash
# Stops the previous revision's listener (nothing to stop on a fresh instance).
set -euo pipefail
systemctl stop sample-app.socket 2>/dev/null || true
