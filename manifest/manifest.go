// Package manifest is the wire schema shared by the publisher and the
// device: the layout of an update repository (a directory any static web
// server or CDN can host) and the channel index that lists its releases.
// It parses and validates; it signs, fetches and writes nothing.
//
// Layout, relative to the repository root:
//
//	keyrings/signing.json(.asc)    signing keyring, signed by a master key
//	keyrings/revoked.json(.asc)    revocation list, signed by a master key
//	channels/CH/index.json(.asc)   channel index, signed by a signing key
//	streams/MODEL/IMAGE/V.sus      full stream of image IMAGE of version V
//	streams/MODEL/IMAGE/V-from-F.sus  delta stream from version F to V
//
// Stream URLs in an index are relative to the index, so a repository can
// be copied to any host or medium (a USB stick) as a whole.
//
// Versions are unsigned integer build numbers, compared numerically; a
// free-form label carries the human name. See docs/repository.md.
package manifest

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"
)

// Schema is the index schema version this package reads and writes.
const Schema = 1

// ErrSchema: the index has a schema version this package cannot read.
var ErrSchema = errors.New("manifest: unknown index schema")

// MaxIndexSize bounds how many bytes a client reads for an index.
const MaxIndexSize = 8 << 20

// IndexName and the channels directory give an index's path:
// channels/CH/index.json.
const IndexName = "index.json"

// IndexPath returns the repository-relative path of a channel's index.
func IndexPath(channel string) string { return path.Join("channels", channel, IndexName) }

// Hash is a SHA-256 digest, written in JSON as 64 lower-case hex digits.
type Hash [32]byte

// MarshalText implements encoding.TextMarshaler.
func (h Hash) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(h[:])), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (h *Hash) UnmarshalText(b []byte) error {
	if len(b) != 64 {
		return fmt.Errorf("hash %q: want 64 hex digits, got %d characters", b, len(b))
	}
	if _, err := hex.Decode(h[:], b); err != nil {
		return fmt.Errorf("hash %q: %w", b, err)
	}
	return nil
}

// String returns the hex form.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// IsZero reports whether h is all zeros.
func (h Hash) IsZero() bool { return h == Hash{} }

// Index is a channel's signed list of releases (channels/CH/index.json).
type Index struct {
	// Schema is 1.
	Schema int `json:"schema"`
	// Channel is the channel's name; a device refuses an index whose
	// channel is not the one it asked for (a mix-and-match of channels).
	Channel string `json:"channel"`
	// Generated is when the index was signed. It strictly increases with
	// every change; a device refuses an index older than the newest it
	// has accepted (replay, rollback of metadata).
	Generated time.Time `json:"generated"`
	// Expires is when a device stops believing this index (a frozen
	// mirror cannot hold devices on old releases past it).
	Expires time.Time `json:"expires"`
	// Floor, when non-zero, is the lowest version a device may install
	// without an explicit downgrade override (known-bad old releases).
	Floor uint64 `json:"floor,omitempty"`
	// Releases, sorted by version then model.
	Releases []Release `json:"releases"`
}

// Release is one version of the system for one hardware model.
type Release struct {
	// Version is the build number; higher is newer.
	Version uint64 `json:"version"`
	// Label is the human name ("2026.03.1"); informational only.
	Label string `json:"label,omitempty"`
	// Model is the hardware model the images are built for.
	Model string `json:"model"`
	// Published is when the release entered this channel.
	Published time.Time `json:"published"`
	// Phased is the percentage (0..100) of devices that may install it;
	// each device decides from its machine ID and the version.
	Phased int `json:"phased"`
	// Images are the slot images of the release (e.g. boot and rootfs),
	// installed together.
	Images []Image `json:"images"`
}

// Image is one slot image of a release and the streams that produce it.
type Image struct {
	// Name names the slot group member ("rootfs", "boot").
	Name string `json:"name"`
	// Size and SHA256 describe the image the streams produce.
	Size   int64 `json:"size"`
	SHA256 Hash  `json:"sha256"`
	// Full is the full-image stream.
	Full Stream `json:"full"`
	// Deltas are streams from older versions' images of the same name.
	Deltas []Delta `json:"deltas,omitempty"`
}

// Stream locates one update stream and pins its content.
type Stream struct {
	// URL is relative to the index's URL.
	URL string `json:"url"`
	// Size is the stream's exact size; a device never reads more.
	Size int64 `json:"size"`
	// Header is the stream's header hash (stream.Header.Hash), which
	// authenticates everything in the stream.
	Header Hash `json:"header"`
}

// Delta is a stream that needs the image of an older version as source.
type Delta struct {
	// From is the version whose image the delta reads.
	From uint64 `json:"from"`
	// SourceSize and SourceSHA256 describe that image.
	SourceSize   int64 `json:"source_size"`
	SourceSHA256 Hash  `json:"source_sha256"`
	Stream
}

// ValidName reports whether s is usable as a channel, model or image name:
// 1 to 64 of [A-Za-z0-9._-], not starting with '.' or '-'.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 64 || s[0] == '.' || s[0] == '-' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ParseIndex decodes and validates an index. name (file or URL) is used
// in error messages. It checks structure only, not the signature.
func ParseIndex(name string, data []byte) (*Index, error) {
	if len(data) > MaxIndexSize {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d an index may have", name, len(data), MaxIndexSize)
	}
	var idx Index
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&idx); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("%s: invalid JSON at offset %d: %w", name, se.Offset, err)
		}
		return nil, fmt.Errorf("%s: invalid index: %w", name, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s: trailing data after the index at offset %d", name, dec.InputOffset())
	}
	if err := idx.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &idx, nil
}

// Validate checks the index's invariants.
func (idx *Index) Validate() error {
	if idx.Schema != Schema {
		return fmt.Errorf("%w: schema %d, this sysupdate reads schema %d; update sysupdate first", ErrSchema, idx.Schema, Schema)
	}
	if !ValidName(idx.Channel) {
		return fmt.Errorf("channel name %q is invalid", idx.Channel)
	}
	if idx.Generated.IsZero() || !idx.Expires.After(idx.Generated) {
		return fmt.Errorf("expires %s is not after generated %s", idx.Expires.Format(time.RFC3339), idx.Generated.Format(time.RFC3339))
	}
	seen := map[string]bool{}
	for i := range idx.Releases {
		r := &idx.Releases[i]
		where := fmt.Sprintf("releases[%d] (version %d, model %q)", i, r.Version, r.Model)
		if r.Version == 0 {
			return fmt.Errorf("%s: version 0 is reserved for \"nothing installed\"", where)
		}
		if !ValidName(r.Model) {
			return fmt.Errorf("%s: invalid model name", where)
		}
		key := fmt.Sprintf("%d/%s", r.Version, r.Model)
		if seen[key] {
			return fmt.Errorf("%s: listed twice", where)
		}
		seen[key] = true
		if r.Phased < 0 || r.Phased > 100 {
			return fmt.Errorf("%s: phased %d is not a percentage", where, r.Phased)
		}
		if len(r.Images) == 0 {
			return fmt.Errorf("%s: no images", where)
		}
		names := map[string]bool{}
		for j := range r.Images {
			im := &r.Images[j]
			iw := fmt.Sprintf("%s: images[%d] %q", where, j, im.Name)
			if !ValidName(im.Name) || names[im.Name] {
				return fmt.Errorf("%s: invalid or duplicate image name", iw)
			}
			names[im.Name] = true
			if im.Size <= 0 {
				return fmt.Errorf("%s: size %d", iw, im.Size)
			}
			if err := im.Full.validate(); err != nil {
				return fmt.Errorf("%s: full: %w", iw, err)
			}
			for k, d := range im.Deltas {
				if d.From == 0 || d.From >= r.Version {
					return fmt.Errorf("%s: deltas[%d]: from %d is not older than %d", iw, k, d.From, r.Version)
				}
				if d.SourceSize <= 0 {
					return fmt.Errorf("%s: deltas[%d]: source size %d", iw, k, d.SourceSize)
				}
				if err := d.Stream.validate(); err != nil {
					return fmt.Errorf("%s: deltas[%d]: %w", iw, k, err)
				}
			}
		}
	}
	return nil
}

func (s *Stream) validate() error {
	if s.Size <= 0 {
		return fmt.Errorf("stream size %d", s.Size)
	}
	if s.Header.IsZero() {
		return errors.New("stream header hash missing")
	}
	u := s.URL
	if u == "" || strings.Contains(u, ":") || strings.HasPrefix(u, "/") || strings.Contains(u, "\\") || strings.ContainsAny(u, "?#") {
		return fmt.Errorf("stream url %q must be a relative path", u)
	}
	return nil
}

// Marshal encodes the index as indented JSON with a trailing newline.
func (idx *Index) Marshal() ([]byte, error) {
	idx.sort()
	if idx.Releases == nil {
		idx.Releases = []Release{}
	}
	b, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func (idx *Index) sort() {
	sort.SliceStable(idx.Releases, func(i, j int) bool {
		a, b := idx.Releases[i], idx.Releases[j]
		if a.Version != b.Version {
			return a.Version < b.Version
		}
		return a.Model < b.Model
	})
}

// Find returns the release of version v for model, or nil.
func (idx *Index) Find(v uint64, model string) *Release {
	for i := range idx.Releases {
		if idx.Releases[i].Version == v && idx.Releases[i].Model == model {
			return &idx.Releases[i]
		}
	}
	return nil
}

// Newest returns the highest version published for model, 0 if none.
func (idx *Index) Newest(model string) uint64 {
	var v uint64
	for _, r := range idx.Releases {
		if r.Model == model && r.Version > v {
			v = r.Version
		}
	}
	return v
}

// Recent returns up to n releases for model older than v, newest first:
// the sources a new release gets deltas from.
func (idx *Index) Recent(model string, v uint64, n int) []*Release {
	var out []*Release
	for i := range idx.Releases {
		r := &idx.Releases[i]
		if r.Model == model && r.Version < v {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version > out[j].Version })
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// Image returns the image called name, or nil.
func (r *Release) Image(name string) *Image {
	for i := range r.Images {
		if r.Images[i].Name == name {
			return &r.Images[i]
		}
	}
	return nil
}

// SameContent reports whether two releases carry the same images (names,
// sizes and hashes), which is what makes re-publishing idempotent.
func (r *Release) SameContent(o *Release) bool {
	if len(r.Images) != len(o.Images) {
		return false
	}
	for _, im := range r.Images {
		oi := o.Image(im.Name)
		if oi == nil || oi.Size != im.Size || oi.SHA256 != im.SHA256 {
			return false
		}
	}
	return true
}

// Delta returns the delta from version from, or nil.
func (im *Image) Delta(from uint64) *Delta {
	for i := range im.Deltas {
		if im.Deltas[i].From == from {
			return &im.Deltas[i]
		}
	}
	return nil
}
