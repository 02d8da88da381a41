#!/bin/sh
# Load the new units; start nothing: the MongoDB URI must be written first
# (docs/operating.md, "The .deb").
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null || true
fi
