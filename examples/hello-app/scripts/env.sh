# Sourced by the hooks (not a hook itself): where this revision is, and the deploying user's
# state directory for the app's pid and heartbeat.
app=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "${HOME:-}" ]; then
    state="${XDG_STATE_HOME:-$HOME/.local/state}/codedeploy-hello-app"
else
    state="/tmp/codedeploy-hello-app-$(id -u)"
fi
