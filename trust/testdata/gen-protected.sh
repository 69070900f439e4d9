#!/usr/bin/env bash
# Generates gpg-protected.key.asc (armored) and gpg-protected.key.gpg
# (binary): one Ed25519 key protected by the passphrase "sysupdate", made
# by the real gpg. Kept apart from gen.sh so regenerating it leaves the
# other vectors alone. Run from anywhere; the outputs are committed.
set -euo pipefail
cd "$(dirname "$0")"
export GNUPGHOME=$(mktemp -d)
trap 'rm -rf "$GNUPGHOME"' EXIT
gpg --batch --pinentry-mode loopback --passphrase sysupdate --quick-gen-key 'gpg protected <protected@example.com>' ed25519 sign never
gpg --batch --armor --pinentry-mode loopback --passphrase sysupdate --export-secret-keys protected@example.com > gpg-protected.key.asc
gpg --batch --pinentry-mode loopback --passphrase sysupdate --export-secret-keys protected@example.com > gpg-protected.key.gpg
