package trust

import (
	"bytes"
	"fmt"
	"os"
)

// ReadPrivateKeyFile reads the one private key in path, for signing. It
// refuses, before the key is used for anything: a file that group or
// others may read or write (as ssh does; the message says to chmod 600),
// a file holding a public key or several keys, and a key that cannot sign
// here (passphrase-protected: sysupdate never asks for a passphrase).
func ReadPrivateKeyFile(path string) (*Key, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("trust: private key %s is accessible by group or others (mode %#o): refusing to use it; run chmod 600 %s (and check who has read it)", path, perm, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	keys, err := ReadKeys(path, b)
	if err != nil {
		return nil, err
	}
	if len(keys) != 1 {
		return nil, fmt.Errorf("trust: %s holds %d keys, want one", path, len(keys))
	}
	k := keys[0]
	if err := k.CanSign(); err != nil {
		return nil, fmt.Errorf("trust: %s: %w", path, err)
	}
	return k, nil
}

// CanSign returns why k cannot make signatures here, or nil: it has no
// private part, or its private key (or a signing subkey's) is protected by
// a passphrase.
func (k *Key) CanSign() error {
	if !k.HasPrivate() {
		return fmt.Errorf("key %s has no private part; pass the .key file, not the .pub", k.Fingerprint())
	}
	if k.e.PrivateKey.Encrypted {
		return fmt.Errorf("private key %s is passphrase-protected; sysupdate does not ask for passphrases: export it unprotected for the signing host (gpg --export-secret-keys after removing the passphrase), mode 0600", k.Fingerprint())
	}
	for _, sk := range k.e.Subkeys {
		if sk.PrivateKey != nil && sk.PrivateKey.Encrypted {
			return fmt.Errorf("a subkey of %s is passphrase-protected; sysupdate does not ask for passphrases: export the key unprotected for the signing host", k.Fingerprint())
		}
	}
	return nil
}

// SecretSniffLen is how many leading bytes of a file LooksLikeSecretKey
// looks at.
const SecretSniffLen = 4096

// LooksLikeSecretKey reports whether head, the first bytes of a file (at
// most SecretSniffLen are looked at), is a private key: an armored
// "-----BEGIN ... PRIVATE KEY" block (OpenPGP, and PEM or OpenSSH keys
// too) or a binary OpenPGP secret-key or secret-subkey packet. A server
// uses it to refuse to publish keys that were left in its tree.
func LooksLikeSecretKey(head []byte) bool {
	head = head[:min(len(head), SecretSniffLen)]
	for rest := head; ; {
		i := bytes.Index(rest, []byte("-----BEGIN "))
		if i < 0 {
			break
		}
		rest = rest[i+len("-----BEGIN "):]
		line := rest
		if j := bytes.IndexByte(line, '\n'); j >= 0 {
			line = line[:j]
		}
		if bytes.Contains(line, []byte("PRIVATE KEY")) {
			return true
		}
	}
	return secretKeyPacket(head)
}

// secretKeyPacket reports whether b starts with an OpenPGP packet of tag 5
// (secret key) or 7 (secret subkey) whose body starts like a key: version
// 3 to 6, a 4-byte creation time, a public-key algorithm this world uses.
func secretKeyPacket(b []byte) bool {
	if len(b) < 2 || b[0]&0x80 == 0 {
		return false
	}
	var tag byte
	var hdr int
	if b[0]&0x40 != 0 { // new format: tag in the low 6 bits, then 1, 2 or 5 length bytes
		tag = b[0] & 0x3f
		switch l := b[1]; {
		case l < 192:
			hdr = 2
		case l < 224:
			hdr = 3
		case l == 255:
			hdr = 6
		default:
			return false // partial lengths are not allowed for key packets
		}
	} else { // old format: tag in bits 5-2, length type in bits 1-0
		tag = (b[0] >> 2) & 0x0f
		hdr = [4]int{2, 3, 5, 1}[b[0]&3]
	}
	if tag != 5 && tag != 7 {
		return false
	}
	if len(b) < hdr+6 {
		return false
	}
	body := b[hdr:]
	ver := body[0]
	if ver < 3 || ver > 6 {
		return false
	}
	algo := body[5]
	if ver == 3 { // v3 keys carry a 2-byte validity before the algorithm
		if len(body) < 8 {
			return false
		}
		algo = body[7]
	}
	switch algo {
	case 1, 2, 3, 16, 17, 18, 19, 20, 22, 25, 26, 27, 28:
		return true
	}
	return false
}
