package trust

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func genKey(t testing.TB, name string, life time.Duration, now time.Time) *Key {
	t.Helper()
	k, err := Generate(GenerateOptions{Name: name, Lifetime: life, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustSign(t testing.TB, k *Key, msg []byte, now time.Time) []byte {
	t.Helper()
	sig, err := k.Sign(msg, now)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func TestGenerateRoundTrip(t *testing.T) {
	k := genKey(t, "round trip", 24*time.Hour, t0)
	if got := k.Expires(); !got.Equal(t0.Add(24 * time.Hour)) {
		t.Errorf("Expires = %v, want %v", got, t0.Add(24*time.Hour))
	}
	if k.Name() != "round trip" {
		t.Errorf("Name = %q", k.Name())
	}
	var priv bytes.Buffer
	if err := k.WritePrivate(&priv); err != nil {
		t.Fatal(err)
	}
	keys, err := ReadKeys("priv", priv.Bytes())
	if err != nil || len(keys) != 1 {
		t.Fatalf("ReadKeys(private) = %v, %v", keys, err)
	}
	if !keys[0].HasPrivate() || keys[0].Fingerprint() != k.Fingerprint() {
		t.Fatalf("re-read key: private %v fingerprint %s, want %s", keys[0].HasPrivate(), keys[0].Fingerprint(), k.Fingerprint())
	}
	pub, err := ReadKeys("pub", k.PublicBytes())
	if err != nil {
		t.Fatal(err)
	}
	if pub[0].HasPrivate() {
		t.Fatal("public export carries the private key")
	}
	if _, err := pub[0].Sign([]byte("x"), t0); err == nil || !strings.Contains(err.Error(), "no private part") {
		t.Fatalf("Sign with a public key: %v", err)
	}
	msg := []byte("index bytes")
	sig := mustSign(t, keys[0], msg, t0.Add(time.Minute))
	signer, err := Verify(pub, msg, sig, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if signer.Fingerprint() != k.Fingerprint() {
		t.Fatalf("signer %s, want %s", signer.Fingerprint(), k.Fingerprint())
	}
	if fps := SignerFingerprints(sig); len(fps) != 1 || fps[0] != k.Fingerprint() {
		t.Fatalf("SignerFingerprints = %v, want [%s]", fps, k.Fingerprint())
	}
}

func TestVerifyRefusals(t *testing.T) {
	k := genKey(t, "signer", 30*24*time.Hour, t0)
	other := genKey(t, "stranger", 0, t0)
	revoked := genKey(t, "revoked", 0, t0)
	msg := []byte("channel index")
	sig := mustSign(t, k, msg, t0.Add(time.Minute))
	revSig := mustSign(t, revoked, msg, t0.Add(time.Minute))
	if err := revoked.e.Revoke(packet.KeyCompromised, "test", &packet.Config{Time: func() time.Time { return t0.Add(2 * time.Minute) }}); err != nil {
		t.Fatal(err)
	}
	revPub, err := ReadKeys("revoked", revoked.PublicBytes())
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Replace(sig, []byte("\n"), []byte("\nAAAA"), 3)
	for _, tc := range []struct {
		name string
		keys []*Key
		msg  []byte
		sig  []byte
		now  time.Time
		want error
	}{
		{"missing signature", []*Key{k}, msg, nil, t0.Add(time.Hour), ErrNoSignature},
		{"blank signature", []*Key{k}, msg, []byte("\n  \n"), t0.Add(time.Hour), ErrNoSignature},
		{"other bytes", []*Key{k}, []byte("channel indeX"), sig, t0.Add(time.Hour), ErrBadSignature},
		{"garbled armor", []*Key{k}, msg, tampered, t0.Add(time.Hour), ErrBadSignature},
		{"not a signature", []*Key{k}, msg, k.PublicBytes(), t0.Add(time.Hour), ErrBadSignature},
		{"unknown key", []*Key{other}, msg, sig, t0.Add(time.Hour), ErrUnknownKey},
		{"expired key", []*Key{k}, msg, sig, t0.Add(31 * 24 * time.Hour), ErrExpired},
		{"openpgp-revoked key", revPub, msg, revSig, t0.Add(time.Hour), ErrRevoked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(tc.keys, tc.msg, tc.sig, tc.now)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestChain(t *testing.T) {
	master := genKey(t, "master", 0, t0)
	master2 := genKey(t, "master 2", 0, t0)
	sign1 := genKey(t, "signing 1", 0, t0)
	sign2 := genKey(t, "signing 2", 0, t0)
	rogue := genKey(t, "rogue", 0, t0)
	created, expires := t0.Add(time.Hour), t0.Add(90*24*time.Hour)
	kr, err := NewKeyring([]*Key{sign1, sign2}, created, expires)
	if err != nil {
		t.Fatal(err)
	}
	kr2, err := NewKeyring([]*Key{sign2}, created, expires)
	if err != nil {
		t.Fatal(err)
	}
	noRev, err := NewRevocations(nil, created, expires)
	if err != nil {
		t.Fatal(err)
	}
	rev1, err := NewRevocations([]Revocation{{Fingerprint: strings.ToLower(sign1.Fingerprint()), Reason: "laptop stolen", Date: created}}, created, expires)
	if err != nil {
		t.Fatal(err)
	}
	revMaster, err := NewRevocations([]Revocation{{Fingerprint: master.Fingerprint(), Reason: "rotated"}}, created, expires)
	if err != nil {
		t.Fatal(err)
	}
	now := t0.Add(2 * time.Hour)
	files := func(kr []byte, krSigner *Key, rev []byte, revSigner *Key) ChainFiles {
		return ChainFiles{Keyring: kr, KeyringSig: mustSign(t, krSigner, kr, created), Revocations: rev, RevocationsSig: mustSign(t, revSigner, rev, created)}
	}
	msg := []byte(`{"channel":"stable"}`)
	for _, tc := range []struct {
		name      string
		masters   []*Key
		f         ChainFiles
		now       time.Time
		signer    *Key
		wantChain error
		wantMsg   error
	}{
		{"good", []*Key{master}, files(kr, master, noRev, master), now, sign2, nil, nil},
		{"second signing key", []*Key{master}, files(kr, master, noRev, master), now, sign1, nil, nil},
		{"revoked signing key", []*Key{master}, files(kr, master, rev1, master), now, sign1, nil, ErrRevoked},
		{"revoked key dropped from keyring", []*Key{master}, files(kr2, master, rev1, master), now, sign1, nil, ErrRevoked},
		{"other key survives revocation", []*Key{master}, files(kr, master, rev1, master), now, sign2, nil, nil},
		{"key outside keyring", []*Key{master}, files(kr, master, noRev, master), now, rogue, nil, ErrUnknownKey},
		{"keyring by non-master", []*Key{master}, files(kr, rogue, noRev, master), now, sign1, ErrUnknownKey, nil},
		{"revocations by non-master", []*Key{master}, files(kr, master, noRev, rogue), now, sign1, ErrUnknownKey, nil},
		{"keyring expired", []*Key{master}, files(kr, master, noRev, master), expires.Add(time.Second), sign1, ErrExpired, nil},
		{"revoked master", []*Key{master, master2}, files(kr, master, revMaster, master2), now, sign1, ErrRevoked, nil},
		{"self-revoking list", []*Key{master}, files(kr, master, revMaster, master), now, sign1, ErrRevoked, nil},
		{"keyring swapped for revocations", []*Key{master}, files(noRev, master, noRev, master), now, sign1, ErrBadSignature, nil},
		{"missing keyring signature", []*Key{master}, ChainFiles{Keyring: kr, Revocations: noRev, RevocationsSig: mustSign(t, master, noRev, created)}, now, sign1, ErrNoSignature, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := VerifyChain(tc.masters, tc.f, tc.now)
			if !errors.Is(err, tc.wantChain) {
				t.Fatalf("VerifyChain: %v, want %v", err, tc.wantChain)
			}
			if err != nil {
				return
			}
			got, err := c.Verify("channels/stable/index.json", msg, mustSign(t, tc.signer, msg, now), tc.now)
			if !errors.Is(err, tc.wantMsg) {
				t.Fatalf("Chain.Verify: %v, want %v", err, tc.wantMsg)
			}
			if err == nil && got.Fingerprint() != tc.signer.Fingerprint() {
				t.Fatalf("signer %s, want %s", got.Fingerprint(), tc.signer.Fingerprint())
			}
			if err != nil && !strings.Contains(err.Error(), "channels/stable/index.json.asc") {
				t.Fatalf("error does not name the file: %v", err)
			}
		})
	}
}

// needTool fails (never skips) when an oracle is missing.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s missing: run make deps", name)
	}
	return p
}

func runTool(t *testing.T, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out
}

func gpgHome(t *testing.T) []string {
	needTool(t, "gpg")
	home := t.TempDir()
	return []string{"--homedir", home, "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""}
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Acceptance 1: signatures made by sysupdate verify with gpg --verify.
func TestOracleGPGVerifiesOurSignature(t *testing.T) {
	g := gpgHome(t)
	dir := t.TempDir()
	k := genKey(t, "sysupdate signer", 365*24*time.Hour, time.Now().Add(-time.Hour))
	msg := []byte("{\"schema\":1}\n")
	sig := mustSign(t, k, msg, time.Time{})
	runTool(t, k.PublicBytes(), "gpg", append(g, "--import")...)
	m := writeFile(t, dir, "index.json", msg)
	s := writeFile(t, dir, "index.json.asc", sig)
	out := runTool(t, nil, "gpg", append(g, "--status-fd", "1", "--verify", s, m)...)
	if !bytes.Contains(out, []byte("[GNUPG:] VALIDSIG "+k.Fingerprint())) {
		t.Fatalf("gpg did not report VALIDSIG %s:\n%s", k.Fingerprint(), out)
	}
	// And gpg refuses it over other bytes.
	m2 := writeFile(t, dir, "other.json", []byte("{\"schema\":2}\n"))
	cmd := exec.Command("gpg", append(g, "--verify", s, m2)...)
	if err := cmd.Run(); err == nil {
		t.Fatal("gpg accepted our signature over different bytes")
	}
}

// Acceptance 1: signatures made by sysupdate verify with Sequoia's sqop.
func TestOracleSqopVerifiesOurSignature(t *testing.T) {
	needTool(t, "sqop")
	dir := t.TempDir()
	k := genKey(t, "sysupdate signer", 0, time.Now().Add(-time.Hour))
	msg := []byte("release metadata\n")
	sig := writeFile(t, dir, "m.asc", mustSign(t, k, msg, time.Time{}))
	cert := writeFile(t, dir, "cert.asc", k.PublicBytes())
	out := runTool(t, msg, "sqop", "verify", sig, cert)
	if !bytes.Contains(out, []byte(k.Fingerprint())) {
		t.Fatalf("sqop verify output lacks %s:\n%s", k.Fingerprint(), out)
	}
	cmd := exec.Command("sqop", "verify", sig, cert)
	cmd.Stdin = bytes.NewReader([]byte("release metadatA\n"))
	if err := cmd.Run(); err == nil {
		t.Fatal("sqop accepted our signature over different bytes")
	}
}

// Acceptance 1: keys and signatures made by gpg (golden vectors from
// testdata/gen.sh) are accepted; a gpg-revoked key is refused.
func TestGoldenGPG(t *testing.T) {
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	msg := read("message.txt")
	pub, err := ReadKeys("gpg-signer.pub.asc", read("gpg-signer.pub.asc"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(pub, msg, read("message.txt.gpg.asc"), time.Now()); err != nil {
		t.Fatalf("gpg-made signature refused: %v", err)
	}
	if _, err := Verify(pub, append(msg, '!'), read("message.txt.gpg.asc"), time.Now()); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("gpg signature over other bytes: %v, want ErrBadSignature", err)
	}
	revoked, err := ReadKeys("gpg-revoked.pub.asc", read("gpg-revoked.pub.asc"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(revoked, msg, read("message.txt.revoked.asc"), time.Now()); !errors.Is(err, ErrRevoked) {
		t.Fatalf("signature by gpg-revoked key: %v, want ErrRevoked", err)
	}
	// The gpg secret key signs for us, and gpg's public key checks it.
	sec, err := ReadKeys("gpg-signer.key.asc", read("gpg-signer.key.asc"))
	if err != nil {
		t.Fatal(err)
	}
	sig := mustSign(t, sec[0], []byte("signed by a gpg key\n"), time.Time{})
	if _, err := Verify(pub, []byte("signed by a gpg key\n"), sig, time.Now()); err != nil {
		t.Fatalf("signature with gpg-made secret key: %v", err)
	}
}

// Acceptance 1: keys and signatures made by a live gpg and a live sqop
// (subkey-signing certificates) are accepted.
func TestOracleToolKeysAccepted(t *testing.T) {
	g := gpgHome(t)
	needTool(t, "sqop")
	dir := t.TempDir()
	msg := []byte("made elsewhere\n")
	m := writeFile(t, dir, "msg", msg)
	runTool(t, nil, "gpg", append(g, "--quick-gen-key", "live gpg <live@example.com>", "ed25519", "sign", "1y")...)
	gsig := runTool(t, nil, "gpg", append(g, "--armor", "--detach-sign", "-o", "-", m)...)
	gpub := runTool(t, nil, "gpg", append(g, "--armor", "--export", "live@example.com")...)
	keys, err := ReadKeys("gpg export", gpub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(keys, msg, gsig, time.Now()); err != nil {
		t.Fatalf("live gpg signature refused: %v", err)
	}
	if _, err := Verify(keys, msg, gsig, time.Now().Add(2*366*24*time.Hour)); !errors.Is(err, ErrExpired) {
		t.Fatalf("gpg key with 1y expiry, checked 2y later: %v, want ErrExpired", err)
	}
	skey := runTool(t, nil, "sqop", "generate-key", "live sqop <sqop@example.com>")
	scert := runTool(t, skey, "sqop", "extract-cert")
	kf := writeFile(t, dir, "sqop.key", skey)
	ssig := runTool(t, msg, "sqop", "sign", kf)
	certs, err := ReadKeys("sqop cert", scert)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(certs, msg, ssig, time.Now()); err != nil {
		t.Fatalf("sqop signature (signing subkey) refused: %v", err)
	}
}

func FuzzParseKeyring(f *testing.F) {
	k := genKey(f, "fuzz", 0, t0)
	kr, err := NewKeyring([]*Key{k}, t0, t0.Add(time.Hour))
	if err != nil {
		f.Fatal(err)
	}
	rev, err := NewRevocations([]Revocation{{Fingerprint: k.Fingerprint()}}, t0, t0.Add(time.Hour))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(kr)
	f.Add(rev)
	f.Add([]byte(`{"type":"sysupdate-signing-keyring","schema":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if doc, keys, err := ParseKeyring("fuzz", b); err == nil && (doc == nil || len(keys) == 0) {
			t.Fatal("ParseKeyring: nil error without keys")
		}
		if list, err := ParseRevocations("fuzz", b); err == nil {
			for _, r := range list.Revoked {
				if _, err := NormalizeFingerprint(r.Fingerprint); err != nil {
					t.Fatalf("accepted bad fingerprint %q", r.Fingerprint)
				}
			}
		}
	})
}

func FuzzVerify(f *testing.F) {
	k := genKey(f, "fuzz", 0, t0)
	msg := []byte("m")
	f.Add(mustSign(f, k, msg, t0))
	f.Add([]byte("-----BEGIN PGP SIGNATURE-----\n\n-----END PGP SIGNATURE-----\n"))
	f.Fuzz(func(t *testing.T, sig []byte) {
		signer, err := Verify([]*Key{k}, msg, sig, t0.Add(time.Hour))
		if err == nil && signer.Fingerprint() != k.Fingerprint() {
			t.Fatal("verified with a key not in the ring")
		}
		if err != nil && !(errors.Is(err, ErrNoSignature) || errors.Is(err, ErrBadSignature) || errors.Is(err, ErrUnknownKey) || errors.Is(err, ErrRevoked) || errors.Is(err, ErrExpired)) {
			t.Fatalf("unclassified error %v", err)
		}
		_ = SignerFingerprints(sig)
	})
}
