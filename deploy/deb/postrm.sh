#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null || true
fi
# dpkg removes the conffile on purge; the URI file is the operator's, but it
# holds a password: purge takes it too, with the directory.
if [ "$1" = purge ]; then
	rm -f /etc/spendchecker/mongo-uri /etc/spendchecker/config.json
	rmdir /etc/spendchecker 2>/dev/null || true
fi
