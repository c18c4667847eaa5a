#!/usr/bin/env bash
# Builds the Debian package: target/debian/passback_<version>_<arch>.deb, with the release
# binary, the systemd units of the portal and the agent (packaging/), example configurations in
# /etc/passback and /etc/passback-agent (the text `passback init` writes) and the README. Needs
# dpkg-deb.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
arch=$(dpkg --print-architecture)
out=target/debian
root="$out/root"
rm -rf "$root"
install -Dm755 target/release/passback "$root/usr/bin/passback"
for unit in passback-serve passback-agent; do
    install -Dm644 "packaging/$unit.service" "$root/lib/systemd/system/$unit.service"
done
# The examples are what `passback init` writes, for an organisation at example.org.
bin=target/release/passback
mkdir -p "$root/etc/passback" "$root/etc/passback-agent"
"$bin" init portal --print --public-url https://passback.example.org >"$root/etc/passback/portal.toml.example"
"$bin" init agent --print --portal-url https://passback.example.org --directory corp --kind ad \
    --url ldaps://dc1.corp.example.org:636 --base-dn "OU=Staff,DC=corp,DC=example,DC=org" \
    --bind-dn "CN=svc-passback,OU=Service Accounts,DC=corp,DC=example,DC=org" \
    >"$root/etc/passback-agent/agent.toml.example"
chmod 0644 "$root/etc/passback/portal.toml.example" "$root/etc/passback-agent/agent.toml.example"
install -Dm644 README.md "$root/usr/share/doc/passback/README.md"
install -Dm644 docs/directories.md "$root/usr/share/doc/passback/directories.md"
install -Dm644 /dev/null "$root/usr/share/doc/passback/copyright"
cat > "$root/usr/share/doc/passback/copyright" <<'TEXT'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: passback

Files: *
Copyright: the passback contributors
License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
TEXT
mkdir -p "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" packaging/control >"$root/DEBIAN/control"
printf '%s\n' /etc/passback/portal.toml.example /etc/passback-agent/agent.toml.example >"$root/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m755 "packaging/$script" "$root/DEBIAN/$script"
done
deb="$out/passback_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
