package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// publishFixture is a repository whose signing keyring lists signing.pub,
// plus a master key, an unrelated key and an image to publish.
func publishFixture(t *testing.T) (repoDir, keys, img string) {
	t.Helper()
	dir := t.TempDir()
	repoDir, keys = filepath.Join(dir, "repo"), filepath.Join(dir, "keys")
	for _, n := range []string{"master", "signing", "other"} {
		runOK(t, "keygen", "--out", keys, n)
	}
	runOK(t, "keyring", "--repo", repoDir, "--master", filepath.Join(keys, "master.key"), filepath.Join(keys, "signing.pub"))
	img = filepath.Join(dir, "rootfs.img")
	if err := os.WriteFile(img, bytes.Repeat([]byte("an image "), 100_000), 0o644); err != nil {
		t.Fatal(err)
	}
	return repoDir, keys, img
}

// publishErr runs publish with key and returns its error and output.
func publishErr(t *testing.T, repoDir, key, img string) (string, error) {
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"publish", "--repo", repoDir, "--channel", "stable", "--version", "1", "--model", "m", "--key", key, img}, &out, &errb)
	return out.String() + errb.String(), err
}

// builtNothing fails if the repository holds more than its keyrings.
func builtNothing(t *testing.T, repoDir, what string) {
	t.Helper()
	ents, _ := os.ReadDir(repoDir)
	for _, e := range ents {
		if e.Name() != "keyrings" {
			t.Errorf("%s: publish left %s in the repository", what, e.Name())
		}
	}
}

// TestPublishRefusesKeyNotInKeyring: the master key or an unrelated key is
// refused before any stream is built; the listed signing key publishes.
func TestPublishRefusesKeyNotInKeyring(t *testing.T) {
	repoDir, keys, img := publishFixture(t)
	for _, k := range []string{"master", "other"} {
		out, err := publishErr(t, repoDir, filepath.Join(keys, k+".key"), img)
		if err == nil || !strings.Contains(err.Error(), "not in the repository's signing keyring") {
			t.Errorf("publish with the %s key: %v\n%s", k, err, out)
		}
		builtNothing(t, repoDir, k)
	}
	if out, err := publishErr(t, repoDir, filepath.Join(keys, "signing.key"), img); err != nil {
		t.Fatalf("publish with the signing key: %v\n%s", err, out)
	}
}

// TestPublishRefusesPassphraseKeyFirst: a passphrase-protected key (made
// by gpg) is refused before any stream is built.
func TestPublishRefusesPassphraseKeyFirst(t *testing.T) {
	repoDir, keys, img := publishFixture(t)
	b, err := os.ReadFile(filepath.Join("..", "..", "trust", "testdata", "gpg-protected.key.asc"))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(keys, "protected.key")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := publishErr(t, repoDir, p, img)
	if err == nil || !strings.Contains(err.Error(), "passphrase") {
		t.Fatalf("publish with a protected key: %v\n%s", err, out)
	}
	builtNothing(t, repoDir, "protected key")
}

// TestPublishRefusesGroupReadableKey: a private key file that group or
// others can read is refused, naming chmod 600; the same key at 0600 works.
func TestPublishRefusesGroupReadableKey(t *testing.T) {
	repoDir, keys, img := publishFixture(t)
	key := filepath.Join(keys, "signing.key")
	for _, cmd := range [][]string{
		{"publish", "--repo", repoDir, "--channel", "stable", "--version", "1", "--model", "m", "--key", key, img},
		{"promote", "--repo", repoDir, "--from", "stable", "--to", "beta", "--key", key, "1"},
		{"keyring", "--repo", repoDir, "--master", filepath.Join(keys, "master.key"), filepath.Join(keys, "signing.pub")},
	} {
		k := key
		if cmd[0] == "keyring" {
			k = filepath.Join(keys, "master.key")
		}
		if err := os.Chmod(k, 0o640); err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		err := run(context.Background(), cmd, &out, &errb)
		if err == nil || !strings.Contains(err.Error(), "chmod 600 "+k) {
			t.Errorf("%s with a group-readable key: %v", cmd[0], err)
		}
		os.Chmod(k, 0o600)
	}
	builtNothing(t, repoDir, "group-readable key")
	if out, err := publishErr(t, repoDir, key, img); err != nil {
		t.Fatalf("publish at mode 0600: %v\n%s", err, out)
	}
}
