#!/usr/bin/env bash
# Measures the writeback path (release build): the bare directory, the full path through the
# portal, the relay alone, frame sizes and memory. Prints a table and writes target/bench/*.json.
#   scripts/bench.sh          latency, side by side (about a minute)
#   scripts/bench.sh --history 1000000
#                             the same over a million rows in every table that grows with use
#   scripts/bench.sh --ad     the same against a Samba AD DC (needs root, ports 389 and 636)
#   scripts/bench.sh --load   load and verify: 200 people, 32 browsers, 60 s steady, then 60 s
#                             with the agent killed twice and the directory paused
#   scripts/bench.sh --load --instances 2 --database postgres
#                             the same load on SQLite, on PostgreSQL with one instance and with
#                             two (a minute each), then with an instance and an agent each
#                             killed twice and the directory paused
#   scripts/bench.sh --breached 10000000
#                             the offline breached-password file: build time, size, lookup time
#                             and passwords found by chance, on a generated corpus
# Everything runs on 127.0.0.1 in target/bench/; needs slapd (scripts/demo.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PATH:/usr/sbin"
cargo build --release --locked --quiet
exec target/release/passback bench "$@"
