#!/usr/bin/env bash
# Runs the whole test suite: unit tests and the integration tests, which start their own OpenLDAP
# (slapd with ppolicy), Samba AD DC, SMTP sink, portal over TLS and agent processes on 127.0.0.1.
# Samba's LDAP ports are fixed (389/636): nothing else may use them while the tests run.
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PATH:/usr/sbin"
# Each integration test starts a directory, a portal and an agent; they mostly wait on I/O,
# so a few run at once even on 2 cores.
exec cargo test --locked -- --test-threads "${PASSBACK_TEST_THREADS:-4}"
