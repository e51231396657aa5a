#!/bin/bash
# The deployment succeeds only when the health check path answers on port 80 with this
# revision (the ALB target group checks the same path).
set -euo pipefail
want="$(cat /opt/sample-app/REVISION)"
for _ in $(seq 1 60); do
    if got="$(python3 -c 'import urllib.request,sys; sys.stdout.write(urllib.request.urlopen("http://127.0.0.1:80/health", timeout=2).read().decode())' 2>/dev/null)" \
        && [[ "$got" == "ok $want" ]]; then
        echo "health check answers: $got"
        exit 0
    fi
    sleep 1
done
echo "http://127.0.0.1:80/health did not answer 'ok $want' within 60 s (last: ${got:-no answer})" >&2
systemctl status sample-app.service --no-pager >&2 || true
exit 1
