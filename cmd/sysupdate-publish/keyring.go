package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sysupdate/sysupdate/atomicfile"
	"github.com/sysupdate/sysupdate/trust"
)

func init() {
	register("keyring", "sign the signing keyring and revocation list with the master key", runKeyring)
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

var _ flag.Value = (*multiFlag)(nil)

func runKeyring(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("keyring", "--repo DIR --master MASTER.key [--revoke FPR|KEY.pub]... SIGNING.pub...", stderr)
	dir := fs.String("repo", "", "repository root")
	masterPath := fs.String("master", "", "master private key (keep it offline)")
	expires := fs.String("expires", "365d", "lifetime of the keyring and revocation list")
	var revoke multiFlag
	fs.Var(&revoke, "revoke", "fingerprint or public key file to revoke (repeatable; revocations accumulate)")
	reason := fs.String("reason", "", "reason recorded with --revoke")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *dir == "" || *masterPath == "" || len(pos) == 0 {
		return usageError("keyring needs --repo, --master and at least one signing public key")
	}
	life, err := parseLifetime(*expires)
	if err != nil || life == 0 {
		return usageError("--expires: the keyring must expire (e.g. 365d)")
	}
	master, err := readKey(*masterPath, true)
	if err != nil {
		return err
	}
	now := time.Now().UTC().Truncate(time.Second)
	// Revocations accumulate: start from the list in the repository.
	var revoked []trust.Revocation
	created := now
	revPath := filepath.Join(*dir, filepath.FromSlash(trust.RevocationsPath))
	if b, err := os.ReadFile(revPath); err == nil {
		list, err := trust.ParseRevocations(revPath, b)
		if err != nil {
			return err
		}
		revoked = list.Revoked
		if !created.After(list.Created) {
			created = list.Created.Add(time.Second) // keep Created increasing
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, r := range revoke {
		fp, ferr := trust.NormalizeFingerprint(r)
		if ferr != nil {
			k, err := readKey(r, false)
			if err != nil {
				return fmt.Errorf("--revoke %s: neither a fingerprint nor a key file: %v", r, err)
			}
			fp = k.Fingerprint()
		}
		revoked = append(revoked, trust.Revocation{Fingerprint: fp, Reason: *reason, Date: now})
	}
	isRevoked := map[string]bool{}
	for _, r := range revoked {
		isRevoked[r.Fingerprint] = true
	}
	if isRevoked[master.Fingerprint()] {
		return fmt.Errorf("master key %s is revoked; sign with another master key", master.Fingerprint())
	}
	var signing []*trust.Key
	for _, p := range pos {
		k, err := readKey(p, false)
		if err != nil {
			return err
		}
		if isRevoked[k.Fingerprint()] {
			return fmt.Errorf("%s (%s) is revoked; leave it out of the keyring", p, k.Fingerprint())
		}
		signing = append(signing, k)
	}
	kr, err := trust.NewKeyring(signing, created, created.Add(life))
	if err != nil {
		return err
	}
	rv, err := trust.NewRevocations(revoked, created, created.Add(life))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(revPath), 0o755); err != nil {
		return err
	}
	// Revocations first: a crash in between leaves the stricter state.
	for _, d := range []struct {
		rel string
		b   []byte
	}{{trust.RevocationsPath, rv}, {trust.KeyringPath, kr}} {
		sig, err := master.Sign(d.b, now) // real time: created may be a second ahead
		if err != nil {
			return err
		}
		p := filepath.Join(*dir, filepath.FromSlash(d.rel))
		if err := atomicfile.WriteFile(p, d.b, 0o644); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(p+trust.SigSuffix, sig, 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "keyring: %d signing key(s), %d revoked, signed by %s, expires %s\n", len(signing), len(revoked), master.Fingerprint(), created.Add(life).Format(time.RFC3339))
	return nil
}
