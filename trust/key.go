// Package trust holds the OpenPGP side of sysupdate: key generation,
// detached armored signatures, and the two-level key hierarchy a device
// checks before it believes a repository.
//
// The hierarchy follows Ubuntu system-image's: master keys are baked into
// the device image; a master key signs the signing keyring (the keys that
// sign channel indexes) and the revocation list; both documents carry an
// expiry. A signature is accepted only when its key is in a keyring that
// chains to a master key, is neither revoked (by the revocation list or by
// an OpenPGP revocation signature) nor expired, and the keyring and
// revocation list themselves are unexpired.
//
// Keys are OpenPGP v4 EdDSA (Ed25519) by default so GnuPG 2.2 and Sequoia
// read them. Nothing in this package logs or touches the network; callers
// pass bytes and the current time.
package trust

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// Sentinel errors callers branch on. Every error returned by this package
// that means "do not trust this" wraps exactly one of them.
var (
	// ErrNoSignature means a signature file is missing or empty.
	ErrNoSignature = errors.New("trust: no signature")
	// ErrBadSignature means a signature does not verify, is malformed, or
	// signs different bytes.
	ErrBadSignature = errors.New("trust: bad signature")
	// ErrUnknownKey means the signature was made by a key that is not in
	// the trusted keyring.
	ErrUnknownKey = errors.New("trust: signed by an untrusted key")
	// ErrRevoked means the signing key is revoked, by the revocation list
	// or by an OpenPGP revocation signature.
	ErrRevoked = errors.New("trust: key revoked")
	// ErrExpired means a key, the signing keyring, or the revocation list
	// is past its expiry.
	ErrExpired = errors.New("trust: key expired")
)

// Key is one OpenPGP key (an entity: primary key, user ID, optional
// subkeys), public or with its private part.
type Key struct {
	e *openpgp.Entity
}

// GenerateOptions tune Generate.
type GenerateOptions struct {
	// Name is the user ID, e.g. "Example Corp update signing 2026".
	Name string
	// Lifetime is how long the key is valid; 0 means it never expires.
	Lifetime time.Duration
	// Now is the creation time; zero means time.Now().
	Now time.Time
	// Rand is the entropy source; nil means crypto/rand.
	Rand io.Reader
}

func pgpConfig(now time.Time) *packet.Config {
	c := &packet.Config{
		Algorithm:   packet.PubKeyAlgoEdDSA, // v4 Ed25519 ("EdDSALegacy"): what GnuPG 2.2 reads
		Curve:       packet.Curve25519,
		DefaultHash: 0, // SHA-256
	}
	if !now.IsZero() {
		c.Time = func() time.Time { return now }
	}
	return c
}

// Generate creates a signing-only Ed25519 OpenPGP key. The same kind of key
// serves as a master key or as an index-signing key; the role is decided by
// where its public half is placed.
func Generate(opts GenerateOptions) (*Key, error) {
	if opts.Name == "" {
		return nil, errors.New("trust: generate: a key needs a name (user ID)")
	}
	if opts.Lifetime < 0 || opts.Lifetime > time.Duration(1<<32-1)*time.Second {
		return nil, fmt.Errorf("trust: generate: lifetime %v out of range (0 = never, at most ~136 years)", opts.Lifetime)
	}
	cfg := pgpConfig(opts.Now)
	cfg.Rand = opts.Rand
	cfg.KeyLifetimeSecs = uint32(opts.Lifetime / time.Second)
	e, err := openpgp.NewEntity(opts.Name, "", "", cfg)
	if err != nil {
		return nil, fmt.Errorf("trust: generate: %w", err)
	}
	// NewEntity adds an encryption subkey; update keys only ever sign.
	e.Subkeys = nil
	return &Key{e: e}, nil
}

// ReadKeys parses one or more keys, armored (public or private key block)
// or binary. name is used in error messages only (usually the file name).
func ReadKeys(name string, data []byte) ([]*Key, error) {
	var el openpgp.EntityList
	var err error
	if bytes.HasPrefix(bytes.TrimSpace(data), []byte("-----BEGIN")) {
		el, err = readArmoredKeys(bytes.NewReader(data))
	} else {
		el, err = openpgp.ReadKeyRing(bytes.NewReader(data))
	}
	if err != nil {
		return nil, fmt.Errorf("%s: not an OpenPGP key or keyring: %w", name, err)
	}
	if len(el) == 0 {
		return nil, fmt.Errorf("%s: no OpenPGP keys found", name)
	}
	keys := make([]*Key, len(el))
	for i, e := range el {
		keys[i] = &Key{e: e}
	}
	return keys, nil
}

// readArmoredKeys reads every armored key block in r (gpg --export of
// several keys writes one block, but files are often concatenated).
func readArmoredKeys(r io.Reader) (openpgp.EntityList, error) {
	var all openpgp.EntityList
	for {
		block, err := armor.Decode(r)
		if err == io.EOF {
			break
		}
		if err != nil {
			if len(all) > 0 {
				break // trailing garbage after at least one block
			}
			return nil, err
		}
		if block.Type != openpgp.PublicKeyType && block.Type != openpgp.PrivateKeyType {
			return nil, fmt.Errorf("armor block %q is not a key", block.Type)
		}
		el, err := openpgp.ReadKeyRing(block.Body)
		if err != nil {
			return nil, err
		}
		all = append(all, el...)
	}
	if len(all) == 0 {
		return nil, errors.New("no armored key block found")
	}
	return all, nil
}

// Fingerprint is the primary key's fingerprint, upper-case hex.
func (k *Key) Fingerprint() string {
	return strings.ToUpper(hex.EncodeToString(k.e.PrimaryKey.Fingerprint))
}

// Name is the key's primary user ID, or "" when it has none.
func (k *Key) Name() string {
	_, id := k.e.PrimaryIdentity(time.Time{}, nil)
	if id == nil {
		for n := range k.e.Identities {
			return n
		}
		return ""
	}
	return id.Name
}

// Created is the primary key's creation time.
func (k *Key) Created() time.Time { return k.e.PrimaryKey.CreationTime }

// Expires is when the primary key expires according to its self-signature,
// or the zero time when it never does.
func (k *Key) Expires() time.Time {
	sig, err := k.e.PrimarySelfSignature(time.Time{}, nil)
	if err != nil || sig == nil || sig.KeyLifetimeSecs == nil || *sig.KeyLifetimeSecs == 0 {
		return time.Time{}
	}
	return k.e.PrimaryKey.CreationTime.Add(time.Duration(*sig.KeyLifetimeSecs) * time.Second)
}

// HasPrivate reports whether the key carries its private part.
func (k *Key) HasPrivate() bool { return k.e.PrivateKey != nil && !k.e.PrivateKey.Dummy() }

// String names the key for messages: fingerprint and user ID.
func (k *Key) String() string { return fmt.Sprintf("%s (%s)", k.Fingerprint(), k.Name()) }

// WritePublic writes the armored public key.
func (k *Key) WritePublic(w io.Writer) error {
	aw, err := armor.Encode(w, openpgp.PublicKeyType, nil)
	if err != nil {
		return err
	}
	if err := k.e.Serialize(aw); err != nil {
		return fmt.Errorf("trust: serialize public key %s: %w", k.Fingerprint(), err)
	}
	if err := aw.Close(); err != nil {
		return err
	}
	_, err = io.WriteString(w, "\n")
	return err
}

// WritePrivate writes the armored private key, unencrypted. Keep it on an
// offline machine (master) or the build server (signing), mode 0600.
func (k *Key) WritePrivate(w io.Writer) error {
	if !k.HasPrivate() {
		return fmt.Errorf("trust: key %s has no private part", k.Fingerprint())
	}
	aw, err := armor.Encode(w, openpgp.PrivateKeyType, nil)
	if err != nil {
		return err
	}
	if err := k.e.SerializePrivateWithoutSigning(aw, nil); err != nil {
		return fmt.Errorf("trust: serialize private key %s: %w", k.Fingerprint(), err)
	}
	if err := aw.Close(); err != nil {
		return err
	}
	_, err = io.WriteString(w, "\n")
	return err
}

// PublicBytes returns the armored public key.
func (k *Key) PublicBytes() []byte {
	var b bytes.Buffer
	_ = k.WritePublic(&b) // writing to a bytes.Buffer cannot fail; serialization of a parsed key cannot either
	return b.Bytes()
}

// Sign returns an armored detached signature ("PGP SIGNATURE" block, what
// gpg --armor --detach-sign writes) over msg, made at now (zero: the
// current time).
func (k *Key) Sign(msg []byte, now time.Time) ([]byte, error) {
	if !k.HasPrivate() {
		return nil, fmt.Errorf("trust: sign with %s: key has no private part; pass the .key file, not the .pub", k.Fingerprint())
	}
	if k.e.PrivateKey.Encrypted {
		return nil, fmt.Errorf("trust: sign with %s: private key is passphrase-protected; export it unprotected for the signing host", k.Fingerprint())
	}
	var b bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&b, []*openpgp.Entity{k.e}, bytes.NewReader(msg), &openpgp.SignParams{Config: pgpConfig(now)}); err != nil {
		return nil, fmt.Errorf("trust: sign with %s: %w", k.Fingerprint(), err)
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}

// Verify checks an armored or binary detached signature sig over msg
// against keys at time now. It returns the key that made the signature.
//
// It refuses (wrapping the matching sentinel): an empty or malformed
// signature or one over other bytes (ErrNoSignature, ErrBadSignature); a
// signer not among keys (ErrUnknownKey); a signer revoked by an OpenPGP
// revocation signature (ErrRevoked); a signer expired at now or at signing
// time (ErrExpired). Revocation lists are the caller's concern (see Chain).
func Verify(keys []*Key, msg, sig []byte, now time.Time) (*Key, error) {
	if len(bytes.TrimSpace(sig)) == 0 {
		return nil, ErrNoSignature
	}
	if now.IsZero() {
		now = time.Now()
	}
	var body io.Reader = bytes.NewReader(sig)
	if bytes.HasPrefix(bytes.TrimSpace(sig), []byte("-----BEGIN")) {
		block, err := armor.Decode(bytes.NewReader(sig))
		if err != nil {
			return nil, fmt.Errorf("%w: armor: %v", ErrBadSignature, err)
		}
		if block.Type != openpgp.SignatureType {
			return nil, fmt.Errorf("%w: armor block is %q, want %q", ErrBadSignature, block.Type, openpgp.SignatureType)
		}
		body = block.Body
	}
	el := make(openpgp.EntityList, len(keys))
	for i, k := range keys {
		el[i] = k.e
	}
	cfg := pgpConfig(now)
	md, err := openpgp.VerifyDetachedSignatureReader(el, bytes.NewReader(msg), body, cfg)
	if err != nil {
		return nil, classify(err)
	}
	if _, err := io.Copy(io.Discard, md.UnverifiedBody); err != nil {
		return nil, classify(err)
	}
	if md.SignatureError != nil || md.SignedBy == nil {
		err := md.SignatureError
		if err == nil {
			err = pgperrors.ErrUnknownIssuer
		}
		// Name the key when we know which one it was.
		if c := md.SelectedCandidate; c != nil && c.SignedByEntity != nil {
			k := &Key{e: c.SignedByEntity}
			// A key revoked or expired at signing time fails inside the
			// library with a generic error; ask the key itself why.
			if _, verr := c.SignedByEntity.VerifyPrimaryKey(now, cfg); verr != nil {
				return nil, fmt.Errorf("key %s: %w", k, classify(verr))
			}
			return nil, fmt.Errorf("key %s: %w", k, classify(err))
		}
		return nil, classify(err)
	}
	signer := &Key{e: md.SignedBy.Entity}
	// The library checks validity at signing time; a device also refuses
	// keys that are expired or revoked now.
	if _, err := md.SignedBy.Entity.VerifyPrimaryKey(now, cfg); err != nil {
		return nil, fmt.Errorf("key %s at %s: %w", signer, now.UTC().Format(time.RFC3339), classify(err))
	}
	if !md.SignedBy.IsPrimary() {
		for i := range md.SignedBy.Entity.Subkeys {
			sk := &md.SignedBy.Entity.Subkeys[i]
			if sk.PublicKey.KeyId == md.SignedBy.PublicKey.KeyId {
				if _, err := sk.Verify(now, cfg); err != nil {
					return nil, fmt.Errorf("subkey %X of %s: %w", sk.PublicKey.Fingerprint, signer, classify(err))
				}
			}
		}
	}
	return signer, nil
}

// SignerFingerprints returns the fingerprint of the signing (sub)key that
// made sig, as recorded in the signature, without verifying anything; used
// to say which key an unverifiable signature claims to come from.
func SignerFingerprints(sig []byte) []string {
	var body io.Reader = bytes.NewReader(sig)
	if block, err := armor.Decode(bytes.NewReader(sig)); err == nil {
		body = block.Body
	}
	var out []string
	pr := packet.NewReader(body)
	for {
		p, err := pr.Next()
		if err != nil {
			break
		}
		if s, ok := p.(*packet.Signature); ok {
			switch {
			case len(s.IssuerFingerprint) > 0:
				out = append(out, strings.ToUpper(hex.EncodeToString(s.IssuerFingerprint)))
			case s.IssuerKeyId != nil:
				out = append(out, fmt.Sprintf("%016X", *s.IssuerKeyId))
			}
		}
	}
	return out
}

// classify maps go-crypto errors to this package's sentinels.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrBadSignature), errors.Is(err, ErrUnknownKey), errors.Is(err, ErrRevoked), errors.Is(err, ErrExpired), errors.Is(err, ErrNoSignature):
		return err
	case errors.Is(err, pgperrors.ErrUnknownIssuer):
		return fmt.Errorf("%w: %v", ErrUnknownKey, err)
	case errors.Is(err, pgperrors.ErrKeyRevoked):
		return fmt.Errorf("%w: %v", ErrRevoked, err)
	case errors.Is(err, pgperrors.ErrKeyExpired), errors.Is(err, pgperrors.ErrSignatureExpired):
		return fmt.Errorf("%w: %v", ErrExpired, err)
	case err.Error() == "no valid self signature found":
		// gopenpgp returns this for a key whose self-signature is expired or gone.
		return fmt.Errorf("%w: %v", ErrExpired, err)
	}
	return fmt.Errorf("%w: %v", ErrBadSignature, err)
}
