#!/bin/sh
# Before the package's files go away for good (not on upgrade): stop and disable the agent.
#   deb prerm:   before-remove.sh remove | upgrade | deconfigure | failed-upgrade
#   rpm %preun:  before-remove.sh 0 (erase) | 1 (upgrade)
# The stop is graceful: a running deployment command finishes first (docs/operations.md).
set -u
case "${1:-}" in
    remove | 0) ;;
    *) exit 0 ;;
esac
if command -v systemctl >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
        systemctl disable --now codedeploy-agent.service || true
    else
        systemctl disable codedeploy-agent.service || true
    fi
fi
# The rpm does not own the codedeploy-local and /usr/bin symlinks (after-install.sh made them).
for link in /usr/bin/codedeploy-local /usr/bin/codedeploy-agent /opt/codedeploy-agent/bin/codedeploy-local; do
    [ -L "$link" ] && rm -f "$link"
done
exit 0
