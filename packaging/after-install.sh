#!/bin/sh
# After the files are in place: enable and start codedeploy-agent on a fresh install; on an
# upgrade, restart it only when no deployment command is in flight.
#
# One script for every installer (docs/operations.md, "Install and upgrade"):
#   deb postinst:  after-install.sh configure [<old-version>]   (other actions: nothing to do)
#   rpm %post:     after-install.sh 1 (install) | 2 (upgrade)
#   install.sh:    after-install.sh install | upgrade
#
# Environment:
#   CODEDEPLOY_AGENT_NO_START=1  enable the unit but do not start or restart the agent
#   CODEDEPLOY_AGENT_ROOT=DIR    the files were installed under DIR (install.sh --root): only
#                                `systemctl --root=DIR enable`, never start (default /)
#   PACKER_BUILD_NAME            set by Packer's shell provisioner: building an image, no start
#   CODEDEPLOY_AGENT_TEST_SYSTEMCTL=1  tests only: the systemctl on PATH is a fake; treat
#                                CODEDEPLOY_AGENT_ROOT as a live machine with systemd running
set -u

unit=codedeploy-agent.service
root=${CODEDEPLOY_AGENT_ROOT:-/}
live=no
if [ "${CODEDEPLOY_AGENT_TEST_SYSTEMCTL:-}" = 1 ]; then
    live=yes
elif [ "$root" = / ] && [ -d /run/systemd/system ]; then
    live=yes
fi
conf="${root%/}/etc/codedeploy-agent/conf/codedeployagent.yml"

case "${1:-}" in
    configure) if [ -n "${2:-}" ]; then mode=upgrade; else mode=install; fi ;;
    1 | install) mode=install ;;
    [0-9]* | upgrade) mode=upgrade ;;
    *) exit 0 ;; # deb abort-upgrade, abort-remove, ...: the old state is still in place
esac

say() { echo "codedeploy-agent: $*"; }

# Why the agent must not be started now, or nothing when it may be.
no_start_reason() {
    if [ "${CODEDEPLOY_AGENT_NO_START:-}" = 1 ]; then
        echo "CODEDEPLOY_AGENT_NO_START=1"
    elif [ "$live" = no ] && [ "$root" != / ]; then
        echo "installed under $root"
    elif [ "$live" = no ]; then
        echo "systemd is not running (image build, container or chroot)"
    elif [ -n "${PACKER_BUILD_NAME:-}" ]; then
        echo "building an image with Packer (PACKER_BUILD_NAME=$PACKER_BUILD_NAME)"
    fi
}

# A value of codedeployagent.yml (`:key: value` or `key: value`), quotes removed; the last
# occurrence wins, as in the agent.
conf_value() {
    [ -r "$conf" ] || return 0
    sed -n "s/^:\{0,1\}$1:[[:space:]]*//p" "$conf" | tail -n 1 |
        sed -e 's/[[:space:]]*$//' -e "s/^'\(.*\)'\$/\1/" -e 's/^"\(.*\)"$/\1/'
}

# True when a deployment command is in flight: the daemon keeps a file per command in
# <root_dir>/<ongoing_deployment_tracking>/ until the service has accepted its result.
in_flight() {
    root_dir=$(conf_value root_dir)
    tracking=$(conf_value ongoing_deployment_tracking)
    dir="${root%/}${root_dir:-/opt/codedeploy-agent/deployment-root}/${tracking:-ongoing-deployment}"
    [ -d "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]
}

# The codedeploy-local names (the binary dispatches on argv[0]) and codedeploy-agent on PATH. The .deb ships them as
# symlinks; cargo-generate-rpm cannot express symlinks, so they are made here for every
# installer; before-remove.sh removes them on erase.
r=${root%/}
mkdir -p "$r/usr/bin"
ln -sfn codedeploy-agent "$r/opt/codedeploy-agent/bin/codedeploy-local"
ln -sfn /opt/codedeploy-agent/bin/codedeploy-agent "$r/usr/bin/codedeploy-local"
ln -sfn /opt/codedeploy-agent/bin/codedeploy-agent "$r/usr/bin/codedeploy-agent"

if ! command -v systemctl >/dev/null 2>&1; then
    say "systemctl not found: start /opt/codedeploy-agent/bin/codedeploy-agent run yourself"
    exit 0
fi

reason=$(no_start_reason)
if [ "$live" = no ] && [ "$root" != / ]; then
    # A staged tree: enable offline there; the host's systemd is not touched.
    if [ "$mode" = install ]; then
        systemctl --root="$root" enable "$unit"
        say "installed under $root; $unit enabled there, not started"
    fi
    exit 0
fi

[ "$live" = yes ] && systemctl daemon-reload

if [ "$mode" = install ]; then
    # Enable only on a fresh install: an administrator's `systemctl disable` survives upgrades.
    systemctl enable "$unit"
    if [ -n "$reason" ]; then
        say "enabled, not started ($reason); it starts at the next boot"
    else
        systemctl start "$unit" || say "failed to start; see: journalctl -u $unit"
    fi
    exit 0
fi

# Upgrade.
if [ -n "$reason" ]; then
    say "upgraded, not restarted ($reason)"
elif in_flight; then
    say "a deployment command is in progress ($dir is not empty): the running agent is left" \
        "alone; the new version starts at its next restart (systemctl restart $unit)"
else
    # --no-block: should a command arrive in the meantime, the graceful stop waits for it
    # without holding the package manager's lock for up to two hours.
    systemctl --no-block try-restart "$unit"
fi
exit 0
