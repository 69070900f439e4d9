package repo

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sysupdate/sysupdate/trust"
)

// ErrNotSigningKey means the key given to sign an index is not one the
// repository's signing keyring lists (the master key, an unrelated key, a
// revoked one): every device would refuse the index it signs.
var ErrNotSigningKey = errors.New("repo: key is not in the repository's signing keyring")

// CheckSigner checks, before anything is built, that key can sign
// indexes devices will accept: the repository's signing keyring
// (keyrings/signing.json, with its master signature beside it) lists it,
// the revocation list does not, and the keyring has not expired at now.
// It does not check the keyring's master signature (the publisher does not
// need the master key); devices do.
func CheckSigner(dir string, key Signer, now time.Time) error {
	krPath := filepath.Join(dir, filepath.FromSlash(trust.KeyringPath))
	b, err := os.ReadFile(krPath)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %s has no signing keyring (%s); create it with sysupdate keyring --master MASTER.key SIGNING.pub first", ErrNotSigningKey, dir, trust.KeyringPath)
	}
	if err != nil {
		return fmt.Errorf("repo: %w", err)
	}
	if _, err := os.Stat(krPath + trust.SigSuffix); err != nil {
		return fmt.Errorf("%w: %s is not signed (%s%s: %v); re-run sysupdate keyring", ErrNotSigningKey, trust.KeyringPath, trust.KeyringPath, trust.SigSuffix, err)
	}
	doc, keys, err := trust.ParseKeyring(krPath, b)
	if err != nil {
		return fmt.Errorf("repo: %w", err)
	}
	fp := key.Fingerprint()
	var listed []string
	found := false
	for _, k := range keys {
		listed = append(listed, k.Fingerprint())
		if k.Fingerprint() == fp {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("%w: %s is not among the signing keys %s lists (%s); is it the master key or another repository's? Sign with a listed signing key, or add this one with sysupdate keyring", ErrNotSigningKey, fp, trust.KeyringPath, strings.Join(listed, ", "))
	}
	revPath := filepath.Join(dir, filepath.FromSlash(trust.RevocationsPath))
	if rb, err := os.ReadFile(revPath); err == nil {
		list, err := trust.ParseRevocations(revPath, rb)
		if err != nil {
			return fmt.Errorf("repo: %w", err)
		}
		for _, r := range list.Revoked {
			if r.Fingerprint == fp {
				return fmt.Errorf("%w: %s is revoked (%s); sign with a current signing key", ErrNotSigningKey, fp, r.Reason)
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("repo: %w", err)
	}
	if now.After(doc.Expires) {
		return fmt.Errorf("%w: the signing keyring expired at %s; re-sign it with sysupdate keyring and the master key", ErrNotSigningKey, doc.Expires.Format(time.RFC3339))
	}
	return nil
}

// probeSigner makes a throwaway signature, so a key that cannot sign (a
// passphrase, a missing private part) fails before streams are built.
func probeSigner(o *Options) error {
	if o.Key == nil {
		return errors.New("repo: no signing key given")
	}
	if _, err := o.Key.Sign([]byte("sysupdate signing probe\n"), o.now()); err != nil {
		return fmt.Errorf("repo: the signing key cannot sign, nothing was built: %w", err)
	}
	return nil
}
