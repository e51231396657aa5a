#!/bin/bash
set -euo pipefail
systemctl restart sample-app.socket
