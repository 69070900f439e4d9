package trust

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Document types, the "type" field of each signed JSON document.
const (
	KeyringType     = "sysupdate-signing-keyring"
	RevocationsType = "sysupdate-revocations"
)

// Repository paths of the chain documents, relative to the repository root.
// Each has a detached armored signature at the same path plus ".asc".
const (
	KeyringPath     = "keyrings/signing.json"
	RevocationsPath = "keyrings/revoked.json"
)

// SigSuffix is appended to a document's path to name its detached signature.
const SigSuffix = ".asc"

// maxDoc bounds the size of a keyring or revocation document.
const maxDoc = 1 << 20

// KeyringDoc is the signing keyring: the public keys allowed to sign channel
// indexes, signed by a master key, valid until Expires.
type KeyringDoc struct {
	// Type is always KeyringType, so a signed revocation list cannot be
	// passed off as a keyring.
	Type string `json:"type"`
	// Schema is 1.
	Schema int `json:"schema"`
	// Created orders keyrings: a device refuses one older than the newest
	// it has accepted.
	Created time.Time `json:"created"`
	// Expires is when the device stops trusting this keyring.
	Expires time.Time `json:"expires"`
	// Keys is the armored OpenPGP public keyring.
	Keys string `json:"keys"`
}

// Revocation names one revoked key.
type Revocation struct {
	// Fingerprint is the upper-case hex fingerprint of the revoked
	// primary key or subkey.
	Fingerprint string `json:"fingerprint"`
	// Reason is free text for humans.
	Reason string `json:"reason,omitempty"`
	// Date is when the revocation was issued.
	Date time.Time `json:"date"`
}

// RevocationList is the signed blacklist: keys a device must never trust
// again, whatever else vouches for them.
type RevocationList struct {
	// Type is always RevocationsType.
	Type string `json:"type"`
	// Schema is 1.
	Schema int `json:"schema"`
	// Created orders revocation lists like KeyringDoc.Created.
	Created time.Time `json:"created"`
	// Expires bounds how long a stale list (one missing a newer
	// revocation) can be replayed.
	Expires time.Time `json:"expires"`
	// Revoked is the list, sorted by fingerprint.
	Revoked []Revocation `json:"revoked"`
}

// NewKeyring encodes a signing keyring document holding keys' public parts.
func NewKeyring(keys []*Key, created, expires time.Time) ([]byte, error) {
	if len(keys) == 0 {
		return nil, errors.New("trust: a signing keyring needs at least one key")
	}
	if !expires.After(created) {
		return nil, fmt.Errorf("trust: keyring expiry %s is not after its creation %s", expires.Format(time.RFC3339), created.Format(time.RFC3339))
	}
	var b bytes.Buffer
	for _, k := range keys {
		if err := k.WritePublic(&b); err != nil {
			return nil, err
		}
	}
	doc := KeyringDoc{Type: KeyringType, Schema: 1, Created: created.UTC(), Expires: expires.UTC(), Keys: b.String()}
	return marshalDoc(doc)
}

// NewRevocations encodes a revocation list document.
func NewRevocations(revoked []Revocation, created, expires time.Time) ([]byte, error) {
	if !expires.After(created) {
		return nil, fmt.Errorf("trust: revocation list expiry %s is not after its creation %s", expires.Format(time.RFC3339), created.Format(time.RFC3339))
	}
	list := RevocationList{Type: RevocationsType, Schema: 1, Created: created.UTC(), Expires: expires.UTC(), Revoked: []Revocation{}}
	seen := map[string]bool{}
	for _, r := range revoked {
		fp, err := NormalizeFingerprint(r.Fingerprint)
		if err != nil {
			return nil, err
		}
		if seen[fp] {
			continue
		}
		seen[fp] = true
		r.Fingerprint = fp
		r.Date = r.Date.UTC()
		list.Revoked = append(list.Revoked, r)
	}
	sort.Slice(list.Revoked, func(i, j int) bool { return list.Revoked[i].Fingerprint < list.Revoked[j].Fingerprint })
	return marshalDoc(list)
}

func marshalDoc(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// NormalizeFingerprint upper-cases a hex fingerprint, dropping spaces, and
// checks it is a v4 (40 hex digits) or v6 (64) fingerprint.
func NormalizeFingerprint(s string) (string, error) {
	fp := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), " ", ""))
	if _, err := hex.DecodeString(fp); err != nil || (len(fp) != 40 && len(fp) != 64) {
		return "", fmt.Errorf("trust: %q is not a key fingerprint (want 40 or 64 hex digits)", s)
	}
	return fp, nil
}

// ParseKeyring decodes and checks a signing keyring document (not its
// signature) and parses its keys. name is used in error messages.
func ParseKeyring(name string, data []byte) (*KeyringDoc, []*Key, error) {
	if len(data) > maxDoc {
		return nil, nil, fmt.Errorf("%s: %d bytes, more than the %d a keyring may have", name, len(data), maxDoc)
	}
	var doc KeyringDoc
	if err := strictUnmarshal(data, &doc); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	if doc.Type != KeyringType || doc.Schema != 1 {
		return nil, nil, fmt.Errorf("%s: type %q schema %d, want %q schema 1", name, doc.Type, doc.Schema, KeyringType)
	}
	if !doc.Expires.After(doc.Created) {
		return nil, nil, fmt.Errorf("%s: expires %s is not after created %s", name, doc.Expires.Format(time.RFC3339), doc.Created.Format(time.RFC3339))
	}
	keys, err := ReadKeys(name+": keys", []byte(doc.Keys))
	if err != nil {
		return nil, nil, err
	}
	return &doc, keys, nil
}

// ParseRevocations decodes and checks a revocation list document (not its
// signature).
func ParseRevocations(name string, data []byte) (*RevocationList, error) {
	if len(data) > maxDoc {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d a revocation list may have", name, len(data), maxDoc)
	}
	var list RevocationList
	if err := strictUnmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if list.Type != RevocationsType || list.Schema != 1 {
		return nil, fmt.Errorf("%s: type %q schema %d, want %q schema 1", name, list.Type, list.Schema, RevocationsType)
	}
	if !list.Expires.After(list.Created) {
		return nil, fmt.Errorf("%s: expires %s is not after created %s", name, list.Expires.Format(time.RFC3339), list.Created.Format(time.RFC3339))
	}
	for i, r := range list.Revoked {
		fp, err := NormalizeFingerprint(r.Fingerprint)
		if err != nil {
			return nil, fmt.Errorf("%s: revoked[%d]: %w", name, i, err)
		}
		list.Revoked[i].Fingerprint = fp
	}
	return &list, nil
}

func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	if dec.More() {
		return errors.New("invalid JSON: trailing data after the document")
	}
	return nil
}

// ChainFiles are the raw bytes of the chain documents as fetched.
type ChainFiles struct {
	Keyring, KeyringSig         []byte
	Revocations, RevocationsSig []byte
}

// Chain is a verified key hierarchy: the signing keys a device may trust
// right now, and the revocations it must honour.
type Chain struct {
	// Keyring and Revocations are the verified documents.
	Keyring     *KeyringDoc
	Revocations *RevocationList
	// Signing are the keyring's keys minus revoked ones.
	Signing []*Key
	// KeyringSigner and RevocationsSigner are the master keys that signed.
	KeyringSigner, RevocationsSigner *Key

	revoked map[string]Revocation
	all     []*Key // every key in the keyring, revoked ones included
}

// VerifyChain checks the revocation list and then the signing keyring
// against the device's master keys at time now.
//
// The revocation list is checked first: it must be signed by a master key
// it does not itself revoke, and be unexpired. Masters it revokes are then
// dropped. The keyring must be signed by a remaining master and unexpired.
// Errors wrap ErrNoSignature, ErrBadSignature, ErrUnknownKey, ErrRevoked or
// ErrExpired, and name the file at fault.
func VerifyChain(masters []*Key, f ChainFiles, now time.Time) (*Chain, error) {
	if len(masters) == 0 {
		return nil, errors.New("trust: no master keys; the device image must carry at least one")
	}
	list, err := ParseRevocations(RevocationsPath, f.Revocations)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	revSigner, err := Verify(masters, f.Revocations, f.RevocationsSig, now)
	if err != nil {
		return nil, fmt.Errorf("%s%s: %w", RevocationsPath, SigSuffix, err)
	}
	c := &Chain{Revocations: list, RevocationsSigner: revSigner, revoked: map[string]Revocation{}}
	for _, r := range list.Revoked {
		c.revoked[r.Fingerprint] = r
	}
	if r, ok := c.revokedKey(revSigner); ok {
		return nil, fmt.Errorf("%s%s: signed by master key %s which the list itself revokes (%s): %w", RevocationsPath, SigSuffix, revSigner, r.Reason, ErrRevoked)
	}
	if now.After(list.Expires) {
		return nil, fmt.Errorf("%s: revocation list expired at %s (now %s); the publisher must re-sign it: %w", RevocationsPath, list.Expires.Format(time.RFC3339), now.UTC().Format(time.RFC3339), ErrExpired)
	}
	doc, keys, err := ParseKeyring(KeyringPath, f.Keyring)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	krSigner, err := Verify(masters, f.Keyring, f.KeyringSig, now)
	if err != nil {
		return nil, fmt.Errorf("%s%s: %w", KeyringPath, SigSuffix, err)
	}
	if r, ok := c.revokedKey(krSigner); ok {
		return nil, fmt.Errorf("%s%s: signed by revoked master key %s (%s): %w", KeyringPath, SigSuffix, krSigner, r.Reason, ErrRevoked)
	}
	if now.After(doc.Expires) {
		return nil, fmt.Errorf("%s: signing keyring expired at %s (now %s); the publisher must re-sign it with the master key: %w", KeyringPath, doc.Expires.Format(time.RFC3339), now.UTC().Format(time.RFC3339), ErrExpired)
	}
	c.Keyring, c.KeyringSigner, c.all = doc, krSigner, keys
	for _, k := range keys {
		if _, ok := c.revokedKey(k); !ok {
			c.Signing = append(c.Signing, k)
		}
	}
	return c, nil
}

// revokedKey reports whether k's primary key or any subkey is listed.
func (c *Chain) revokedKey(k *Key) (Revocation, bool) {
	if r, ok := c.revoked[k.Fingerprint()]; ok {
		return r, true
	}
	for _, sk := range k.e.Subkeys {
		if r, ok := c.revoked[strings.ToUpper(hex.EncodeToString(sk.PublicKey.Fingerprint))]; ok {
			return r, true
		}
	}
	return Revocation{}, false
}

// IsRevoked reports whether the fingerprint is on the revocation list.
func (c *Chain) IsRevoked(fingerprint string) bool {
	fp, err := NormalizeFingerprint(fingerprint)
	if err != nil {
		return false
	}
	_, ok := c.revoked[fp]
	return ok
}

// Verify checks a detached signature over msg (file name for messages)
// against the chain's signing keys at time now. A signature by a key that
// the keyring holds but the revocation list revokes fails with ErrRevoked
// (not ErrUnknownKey), so the message says what happened.
func (c *Chain) Verify(name string, msg, sig []byte, now time.Time) (*Key, error) {
	signer, err := Verify(c.all, msg, sig, now)
	if errors.Is(err, ErrUnknownKey) {
		// A revoked key is usually dropped from the keyring too; say
		// "revoked" rather than "unknown" when the list names the issuer.
		for _, fp := range SignerFingerprints(sig) {
			if r, ok := c.revoked[fp]; ok {
				return nil, fmt.Errorf("%s%s: signed by %s, revoked on %s (%s): %w", name, SigSuffix, fp, r.Date.Format("2006-01-02"), r.Reason, ErrRevoked)
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s%s: %w", name, SigSuffix, err)
	}
	if r, ok := c.revokedKey(signer); ok {
		return nil, fmt.Errorf("%s%s: signed by %s, revoked on %s (%s): %w", name, SigSuffix, signer, r.Date.Format("2006-01-02"), r.Reason, ErrRevoked)
	}
	return signer, nil
}
