#!/bin/sh
# The awp-knockd unit's sandbox without systemd, for test_unit_sandbox.py (run inside
# `unshare --mount`): ProtectSystem=strict (every mount read-only but the API file systems),
# ReadWritePaths= (bind mounts that stay writable), then NoNewPrivileges= and
# CapabilityBoundingSet= through setpriv, which execs the command.
# Usage: unit_sandbox.sh CAPS "RW_PATH ..." COMMAND...   (CAPS: setpriv's list, say +net_admin)
set -eu
caps=$1 rw=$2
shift 2
for path in $rw; do mount --bind "$path" "$path"; done
awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r m; do
	case "$m" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue ;; esac
	for path in $rw; do [ "$m" = "$path" ] && continue 2; done
	mount -o remount,bind,ro "$m" 2>/dev/null || true
done
exec setpriv --no-new-privs --inh-caps=-all --bounding-set="-all${caps:+,$caps}" -- "$@"
