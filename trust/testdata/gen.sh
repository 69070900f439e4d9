#!/usr/bin/env bash
# Regenerates the GnuPG golden vectors in this directory with the real gpg.
# Run from trust/testdata; the outputs are committed, so tests do not depend
# on gpg's randomness.
set -euo pipefail
cd "$(dirname "$0")"
export GNUPGHOME=$(mktemp -d)
trap 'rm -rf "$GNUPGHOME"' EXIT
gpg --batch --passphrase '' --quick-gen-key 'gpg signer <signer@example.com>' ed25519 sign never
gpg --batch --passphrase '' --quick-gen-key 'gpg revoked <revoked@example.com>' ed25519 sign never
printf 'sysupdate golden message\n' > message.txt
gpg --batch --armor --local-user signer@example.com --detach-sign -o message.txt.gpg.asc message.txt
gpg --batch --armor --local-user revoked@example.com --detach-sign -o message.txt.revoked.asc message.txt
gpg --armor --export signer@example.com > gpg-signer.pub.asc
gpg --batch --armor --pinentry-mode loopback --passphrase '' --export-secret-keys signer@example.com > gpg-signer.key.asc
fpr=$(gpg --with-colons --list-keys revoked@example.com | awk -F: '/^fpr/{print $10; exit}')
gpg --batch --yes --pinentry-mode loopback --passphrase '' --import "$GNUPGHOME/openpgp-revocs.d/$fpr.rev" 2>/dev/null || {
  # the generated revocation certificate is "commented out" with a leading ':'
  sed 's/^:-----BEGIN/-----BEGIN/' "$GNUPGHOME/openpgp-revocs.d/$fpr.rev" > "$GNUPGHOME/rev.asc"
  gpg --batch --import "$GNUPGHOME/rev.asc"
}
gpg --armor --export revoked@example.com > gpg-revoked.pub.asc
