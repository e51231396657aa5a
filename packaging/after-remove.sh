#!/bin/sh
# After the package's files are gone or replaced: make systemd forget the old unit file.
#   deb postrm, rpm %postun. Configuration, logs and the deployment root are kept.
set -u
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload || true
fi
exit 0
