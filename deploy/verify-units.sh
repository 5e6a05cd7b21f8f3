#!/usr/bin/env bash
# Checks the systemd units in deploy/systemd with `systemd-analyze verify` (syntax, unknown
# keys, an ExecStart that exists) and `systemd-analyze security` (hardening stays in place).
#
# The units name the production path /opt/notifications/.venv/bin/notifications, which a
# CI machine does not have: the check runs on temporary copies whose ExecStart points at
# this checkout's console script (or, before `make`, at /bin/true). Exit status 0 = good.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v systemd-analyze >/dev/null; then
    echo "verify-units: systemd-analyze not found" >&2
    exit 1
fi

installed=/opt/notifications/.venv/bin/notifications
stand_in=$PWD/.venv/bin/notifications
[ -x "$stand_in" ] || stand_in=$(command -v true)
# Above this exposure (systemd-analyze security prints it as 0.0 to 10.0; the threshold is
# given x10) a unit lost its hardening.
max_exposure=${MAX_EXPOSURE:-20}

tmp=$(mktemp -d /tmp/notifications-units-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

status=0
for unit in deploy/systemd/*.service; do
    name=$(basename "$unit")
    grep -q "^ExecStart=$installed " "$unit" || {
        echo "verify-units: $unit: ExecStart must run $installed" >&2
        status=1
    }
    sed "s#$installed#$stand_in#g" "$unit" >"$tmp/$name"
    # verify exits 0 on mere warnings (an unknown key is "ignored"): any output is a failure.
    out=$(systemd-analyze verify --man=no "$tmp/$name" 2>&1) || status=1
    if [ -n "$out" ]; then
        echo "$out" >&2
        status=1
    fi
    if ! out=$(systemd-analyze security --offline=true --threshold="$max_exposure" \
        "$tmp/$name" 2>&1); then
        echo "$out" | tail -n 1 >&2
        echo "verify-units: $unit: exposure above $((max_exposure / 10)).$((max_exposure % 10))" >&2
        status=1
    fi
done
[ "$status" -eq 0 ] && echo "verify-units: $(ls deploy/systemd/*.service | wc -l) units OK"
exit "$status"
