#!/bin/sh
# Installs codedeploy-agent from the unpacked release tarball, in the same layout as the
# .deb/.rpm (and the AWS agent):
#   /opt/codedeploy-agent/bin/codedeploy-agent
#   /opt/codedeploy-agent/bin/codedeploy-local -> codedeploy-agent
#   /usr/bin/codedeploy-local -> /opt/codedeploy-agent/bin/codedeploy-agent
#   /usr/bin/codedeploy-agent -> /opt/codedeploy-agent/bin/codedeploy-agent
#   /etc/codedeploy-agent/conf/codedeployagent.yml   (an existing one is kept)
#   /usr/lib/systemd/system/codedeploy-agent.service
# (the codedeploy-local symlinks are made by after-install.sh, as for the .rpm), then enables the unit and starts the agent, or on an upgrade restarts it when no deployment
# command is in flight (after-install.sh has the rules).
#
#   sudo ./install.sh                   # install or upgrade this machine
#   sudo ./install.sh --no-start        # enable only (AMI baking); same as CODEDEPLOY_AGENT_NO_START=1
#   ./install.sh --root /tmp/stage      # into a staging tree (DESTDIR=/tmp/stage works too); never starts
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=${DESTDIR:-/}

usage() { sed -n '2,15s/^# \{0,1\}//p' "$0"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root | --prefix | --destdir) [ $# -ge 2 ] || { usage >&2; exit 2; }; root=$2; shift ;;
        --root=* | --prefix=* | --destdir=*) root=${1#*=} ;;
        --no-start) CODEDEPLOY_AGENT_NO_START=1; export CODEDEPLOY_AGENT_NO_START ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
[ -n "$root" ] || root=/
case "$root" in
    /*) ;;
    *) root="$(pwd)/$root" ;;
esac
r=${root%/}

for f in bin/codedeploy-agent conf/codedeployagent.yml systemd/codedeploy-agent.service after-install.sh; do
    [ -f "$here/$f" ] || { echo "install.sh: $here/$f is missing; run me from the unpacked tarball" >&2; exit 1; }
done

mode=install
[ -e "$r/opt/codedeploy-agent/bin/codedeploy-agent" ] && mode=upgrade

# Put $1 at $2 with mode $3 by rename, so a running agent keeps its (old) binary file.
put() {
    mkdir -p "$(dirname "$2")"
    tmp="$2.install.$$"
    cp "$1" "$tmp"
    chmod "$3" "$tmp"
    mv -f "$tmp" "$2"
}

put "$here/bin/codedeploy-agent" "$r/opt/codedeploy-agent/bin/codedeploy-agent" 755
put "$here/systemd/codedeploy-agent.service" "$r/usr/lib/systemd/system/codedeploy-agent.service" 644

conf="$r/etc/codedeploy-agent/conf/codedeployagent.yml"
if [ -e "$conf" ]; then
    if ! cmp -s "$here/conf/codedeployagent.yml" "$conf"; then
        echo "codedeploy-agent: keeping your $conf (the shipped defaults are in $here/conf/)"
    fi
else
    put "$here/conf/codedeployagent.yml" "$conf" 644
fi

echo "codedeploy-agent: $mode of $("$r/opt/codedeploy-agent/bin/codedeploy-agent" --version 2>/dev/null || echo "into $root")"
CODEDEPLOY_AGENT_ROOT=$root sh "$here/after-install.sh" "$mode"
