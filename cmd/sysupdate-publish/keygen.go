package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sysupdate/sysupdate/atomicfile"
	"github.com/sysupdate/sysupdate/manifest"
	"github.com/sysupdate/sysupdate/trust"
)

func init() {
	register("keygen", "create an Ed25519 OpenPGP master or signing key", runKeygen)
}

func runKeygen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("keygen", "[--out DIR] [--expires 2y] NAME", stderr)
	out := fs.String("out", ".", "directory for NAME.key (private, mode 0600) and NAME.pub")
	expires := fs.String("expires", "2y", "key lifetime: Nd, Ny, a Go duration, or 0 for never")
	uid := fs.String("uid", "", "OpenPGP user ID (default: \"sysupdate NAME\")")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || !manifest.ValidName(pos[0]) {
		return usageError("keygen wants one NAME made of letters, digits, . _ -")
	}
	life, err := parseLifetime(*expires)
	if err != nil {
		return usageError("--expires: %v", err)
	}
	name := *uid
	if name == "" {
		name = "sysupdate " + pos[0]
	}
	k, err := trust.Generate(trust.GenerateOptions{Name: name, Lifetime: life})
	if err != nil {
		return err
	}
	keyPath := filepath.Join(*out, pos[0]+".key")
	if _, err := os.Stat(keyPath); err == nil {
		return fmt.Errorf("%s exists; refusing to overwrite a key", keyPath)
	}
	var priv, pub strings.Builder
	if err := k.WritePrivate(&priv); err != nil {
		return err
	}
	if err := k.WritePublic(&pub); err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(keyPath, []byte(priv.String()), 0o600); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(*out, pos[0]+".pub"), []byte(pub.String()), 0o644); err != nil {
		return err
	}
	exp := "never"
	if e := k.Expires(); !e.IsZero() {
		exp = e.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(stdout, "%s %s expires %s\n", k.Fingerprint(), keyPath, exp)
	return nil
}

// parseLifetime accepts "30d", "2y", Go durations ("36h") and "0".
func parseLifetime(s string) (time.Duration, error) {
	if s == "0" {
		return 0, nil
	}
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "y": 365 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			v, err := strconv.ParseUint(n, 10, 32)
			if err != nil || v == 0 {
				return 0, fmt.Errorf("%q: want a positive number before %q", s, suffix)
			}
			return time.Duration(v) * unit, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, errors.New("want e.g. 30d, 2y, 36h or 0")
	}
	return d, nil
}

// readKey reads the single key in path; a private key must be usable for
// signing and kept from group and others (trust.ReadPrivateKeyFile).
func readKey(path string, private bool) (*trust.Key, error) {
	if private {
		return trust.ReadPrivateKeyFile(path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	keys, err := trust.ReadKeys(path, b)
	if err != nil {
		return nil, err
	}
	if len(keys) != 1 {
		return nil, fmt.Errorf("%s holds %d keys, want one", path, len(keys))
	}
	return keys[0], nil
}
