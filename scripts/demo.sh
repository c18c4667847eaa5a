#!/usr/bin/env bash
# Runs the demo on this machine: installs OpenLDAP (slapd, ldap-utils), or Samba with
# `--directory ad`, if missing; then starts a throwaway directory, the portal
# (https://localhost:8443) and an enrolled agent. With `--ha` (PostgreSQL and nginx installed if
# missing): two portal instances on PostgreSQL behind nginx, and two agents. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ] || need+=(slapd)
command -v ldapwhoami >/dev/null 2>&1 || need+=(ldap-utils)
if [[ " $* " == *" --ha "* ]]; then
    [ -x /usr/sbin/nginx ] || need+=(nginx-light)
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
fi
if [[ " $* " == *" --directory ad "* || " $* " == *" --directory=ad "* ]]; then
    command -v samba >/dev/null 2>&1 || [ -x /usr/sbin/samba ] || need+=(samba samba-ad-dc krb5-user winbind)
fi
if [ ${#need[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    # Without this preseed slapd's package would create and start a default directory.
    echo 'slapd slapd/no_configuration boolean true' | $SUDO debconf-set-selections
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
PATH="$PATH:/usr/sbin"
exec cargo run --locked -- demo "$@"
