#!/usr/bin/env bash
# Runs the whole test suite: unit tests and the integration tests, which start their own OpenLDAP
# (slapd with ppolicy), Samba AD DC, SMTP sink, portal over TLS and agent processes on 127.0.0.1,
# and drive headless Chromium (with axe-core, from npm, for accessibility checks); then the
# integration tests once more on PostgreSQL.
# Samba's LDAP ports are fixed (389/636): nothing else may use them while the tests run.
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PATH:/usr/sbin"
# axe-core, pinned by tests/browser/package-lock.json.
[ -f tests/browser/node_modules/axe-core/axe.min.js ] || npm ci --prefix tests/browser --no-audit --no-fund
# Each integration test starts a directory, a portal and an agent; they mostly wait on I/O,
# so a few run at once even on 2 cores.
threads="${PASSBACK_TEST_THREADS:-4}"
cargo test --locked -- --test-threads "$threads"
# The integration tests again, every portal on PostgreSQL: one cluster that the tests start
# (initdb in a temporary folder, a free port on 127.0.0.1), a database per portal. The tests of
# several instances and of the store on PostgreSQL are always on it: they ran above.
PASSBACK_TEST_DATABASE=postgres cargo test --locked --test it -- --test-threads "$threads" \
    --skip instances:: --skip postgres::
