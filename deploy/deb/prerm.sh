#!/bin/sh
# Stop the daemon and the timer before their files go (not on upgrade).
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	systemctl disable --now spendchecker.service spendchecker-once.timer >/dev/null 2>&1 || true
	systemctl stop spendchecker-once.service >/dev/null 2>&1 || true
fi
