#!/bin/bash
# One HTTP connection on stdin/stdout (systemd socket activation, Accept=yes: see
# systemd/sample-app.socket). GET /health and GET / answer "ok <revision>"; anything else 404.
# Bash only, so it runs on a stock Amazon Linux 2023 (or Debian) image with nothing installed.
set -uo pipefail
revision="$(cat /opt/sample-app/REVISION 2>/dev/null || echo unknown)"
read -r method path _ || exit 0
# Drain the request headers.
while IFS= read -r line && [[ "${line%$'\r'}" != "" ]]; do :; done
if [[ "$method" == GET && ( "$path" == /health || "$path" == / ) ]]; then
    status="200 OK" body="ok $revision"
else
    status="404 Not Found" body="not found"
fi
printf 'HTTP/1.0 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s\n' \
    "$status" "$(( ${#body} + 1 ))" "$body"
