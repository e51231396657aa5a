#!/bin/bash
set -euo pipefail
chmod 0755 /opt/sample-app/serve.sh
systemctl daemon-reload
systemctl enable sample-app.socket
