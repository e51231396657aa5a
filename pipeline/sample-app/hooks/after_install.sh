#!/bin/bash
set -euo pipefail
systemctl daemon-reload
systemctl enable sample-app.service
