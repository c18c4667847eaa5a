#!/usr/bin/env bash
# Runs the demo on this machine: installs OpenLDAP if it is missing, then starts a throwaway
# directory, the portal (https://localhost:8443) and an enrolled agent. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v slapd >/dev/null 2>&1 && [ ! -x /usr/sbin/slapd ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo 'slapd slapd/no_configuration boolean true' | $SUDO debconf-set-selections
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slapd ldap-utils
fi
PATH="$PATH:/usr/sbin"
exec cargo run --locked -- demo "$@"
