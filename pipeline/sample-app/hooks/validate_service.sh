#!/bin/bash
# The deployment succeeds only when the health check path answers on port 80 with this
# revision (the ALB target group checks the same path). bash's /dev/tcp: no curl needed.
set -euo pipefail
want="ok $(cat /opt/sample-app/REVISION)"
got=""
for _ in $(seq 1 30); do
    if exec 3<>/dev/tcp/127.0.0.1/80 2>/dev/null; then
        printf 'GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
        got="$(tail -n1 <&3 || true)"
        exec 3<&-
        if [[ "$got" == "$want" ]]; then
            echo "health check answers: $got"
            exit 0
        fi
    fi
    sleep 1
done
echo "http://127.0.0.1:80/health did not answer '$want' within 30 s (last answer: '${got:-none}')" >&2
systemctl status sample-app.socket --no-pager >&2 || true
exit 1
