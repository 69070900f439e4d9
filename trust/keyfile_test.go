package trust

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeKeyFile(t *testing.T, k *Key, mode os.FileMode) string {
	t.Helper()
	var b strings.Builder
	if err := k.WritePrivate(&b); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "signing.key")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestReadPrivateKeyFileRefusesLooseMode: a private key readable by group
// or others is refused, with the chmod to run; mode 0600 and 0400 are fine.
func TestReadPrivateKeyFileRefusesLooseMode(t *testing.T) {
	k, err := Generate(GenerateOptions{Name: "mode test", Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		p := writeKeyFile(t, k, mode)
		_, err := ReadPrivateKeyFile(p)
		if err == nil || !strings.Contains(err.Error(), "chmod 600 "+p) {
			t.Errorf("mode %#o: %v, want a refusal saying chmod 600", mode, err)
		}
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		got, err := ReadPrivateKeyFile(writeKeyFile(t, k, mode))
		if err != nil || got.Fingerprint() != k.Fingerprint() {
			t.Errorf("mode %#o: %v", mode, err)
		}
	}
}

// TestReadPrivateKeyFileRefusesPassphrase: gpg's passphrase-protected key
// (armored and binary) is refused when read, before anything is signed.
func TestReadPrivateKeyFileRefusesPassphrase(t *testing.T) {
	for _, name := range []string{"gpg-protected.key.asc", "gpg-protected.key.gpg"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), name)
		os.WriteFile(p, b, 0o600)
		_, err = ReadPrivateKeyFile(p)
		if err == nil || !strings.Contains(err.Error(), "passphrase") {
			t.Errorf("%s: %v, want a passphrase refusal", name, err)
		}
	}
	pub := filepath.Join(t.TempDir(), "k.pub")
	b, _ := os.ReadFile(filepath.Join("testdata", "gpg-signer.pub.asc"))
	os.WriteFile(pub, b, 0o600)
	if _, err := ReadPrivateKeyFile(pub); err == nil || !strings.Contains(err.Error(), "no private part") {
		t.Errorf("public key: %v", err)
	}
}

// TestLooksLikeSecretKey: gpg's armored and binary secret keys, our own,
// and PEM/OpenSSH private keys are recognised; public keys, signatures,
// streams, JSON and random bytes are not.
func TestLooksLikeSecretKey(t *testing.T) {
	read := func(n string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", n))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	k, err := Generate(GenerateOptions{Name: "sniff", Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	var own strings.Builder
	k.WritePrivate(&own)
	for name, b := range map[string][]byte{
		"gpg armored":   read("gpg-protected.key.asc"),
		"gpg binary":    read("gpg-protected.key.gpg"),
		"gpg signer":    read("gpg-signer.key.asc"),
		"ours":          []byte(own.String()),
		"openssh":       []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"),
		"pem after doc": append([]byte("# key for the build host\n\n"), []byte("-----BEGIN PRIVATE KEY-----\nMC4CAQA=\n")...),
	} {
		if !LooksLikeSecretKey(b) {
			t.Errorf("%s: not recognised as a secret key", name)
		}
	}
	for name, b := range map[string][]byte{
		"gpg public": read("gpg-signer.pub.asc"),
		"our public": k.PublicBytes(),
		"signature":  read("message.txt.gpg.asc"),
		"stream":     {0x89, 'S', 'U', 'P', '\r', '\n', 0x1a, '\n', 1, 0},
		"json":       []byte(`{"schema":1}`),
		"empty":      nil,
		"zeros":      make([]byte, 4096),
		"0x94 noise": {0x94, 0x10, 0x09, 0, 0, 0, 0, 0xee},
	} {
		if LooksLikeSecretKey(b) {
			t.Errorf("%s: taken for a secret key", name)
		}
	}
}
