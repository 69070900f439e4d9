// Package repo is the publisher side of sysupdate: the operations that
// change an update repository (publish a release, promote it to another
// channel with phasing, re-sign). The repository layout and the index
// schema it writes are package manifest's, shared with the device.
package repo

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"time"

	"github.com/sysupdate/sysupdate/atomicfile"
	"github.com/sysupdate/sysupdate/manifest"
	"github.com/sysupdate/sysupdate/stream"
	"github.com/sysupdate/sysupdate/trust"
)

// Sentinel errors callers branch on.
var (
	// ErrVersionExists means the version is already in the channel with
	// different content; a published version is immutable.
	ErrVersionExists = errors.New("repo: version already published with different content")
	// ErrNotNewer means a release is not newer than what the channel holds.
	ErrNotNewer = errors.New("repo: version is not newer than the channel's newest")
	// ErrNotFound means a promoted version is not in the source channel.
	ErrNotFound = errors.New("repo: version not in channel")
)

// DefaultIndexLifetime is how long a signed index stays valid when the
// caller does not say: long enough to survive a holiday without a
// publisher, short enough that a frozen mirror is noticed.
const DefaultIndexLifetime = 30 * 24 * time.Hour

// ImageFile is one image to publish.
type ImageFile struct {
	// Name is the image's name in the release ("rootfs").
	Name string
	// Path is the image file.
	Path string
}

// Signer signs index bytes. *trust.Key implements it.
type Signer interface {
	Sign(msg []byte, now time.Time) ([]byte, error)
	Fingerprint() string
	Expires() time.Time
}

var _ Signer = (*trust.Key)(nil)

// Options common to every operation that writes an index.
type Options struct {
	// Dir is the repository root.
	Dir string
	// Key signs the index.
	Key Signer
	// Now is the signing time; zero means time.Now().
	Now time.Time
	// IndexLifetime is how long the new index is valid; zero means
	// DefaultIndexLifetime.
	IndexLifetime time.Duration
	// Deltas is how many of the channel's most recent releases (per
	// model) get a delta stream to the new release; 0 means none.
	Deltas int
	// Logf, when non-nil, reports progress.
	Logf func(format string, args ...any)
}

func (o *Options) now() time.Time {
	if o.Now.IsZero() {
		return time.Now().UTC()
	}
	return o.Now.UTC()
}

func (o *Options) logf(format string, args ...any) {
	if o.Logf != nil {
		o.Logf(format, args...)
	}
}

// PublishRequest describes a release to add to a channel.
type PublishRequest struct {
	Channel string
	Version uint64
	Label   string
	// Models the images are built for; one release entry per model.
	Models []string
	Images []ImageFile
	// Phased is the rollout percentage; 0 is taken as 100 (use Promote
	// or SetPhase to stage at 0).
	Phased int
	// Floor, when non-zero, raises the channel's floor.
	Floor uint64
}

// Result says what an operation changed.
type Result struct {
	// Index is the channel's index as it is now on disk.
	Index *manifest.Index
	// Changed is false when the operation found nothing to do (an
	// idempotent re-run) and left the repository untouched.
	Changed bool
	// Streams are the repository-relative paths of streams written.
	Streams []string
}

// Publish adds a release to a channel: for every model, a full stream of
// each image and deltas from the channel's last Deltas releases of that
// model, then the re-signed index.
//
// Re-publishing a version with identical images changes nothing; with
// different images it fails with ErrVersionExists. Streams are written to
// temporary files and renamed into place before the index that names them;
// the index is written last (index.json, then index.json.asc, each by
// atomic rename), so a crash leaves the old index or the new one, plus
// at most some unreferenced streams. A client that reads between the two
// renames sees a signature mismatch and retries later.
func Publish(ctx context.Context, o Options, req PublishRequest) (*Result, error) {
	if !manifest.ValidName(req.Channel) {
		return nil, fmt.Errorf("repo: channel name %q is invalid (use letters, digits, . _ -)", req.Channel)
	}
	if req.Version == 0 {
		return nil, errors.New("repo: version must be a build number > 0")
	}
	if len(req.Models) == 0 || len(req.Images) == 0 {
		return nil, errors.New("repo: a release needs at least one model and one image")
	}
	phased := req.Phased
	if phased == 0 {
		phased = 100
	}
	if phased < 0 || phased > 100 {
		return nil, fmt.Errorf("repo: phased %d is not a percentage", phased)
	}
	if err := probeSigner(&o); err != nil {
		return nil, err
	}
	idx, err := LoadIndex(o.Dir, req.Channel)
	if err != nil {
		return nil, err
	}
	// Describe the images once: size and hash.
	var imgs []manifest.Image
	names := map[string]bool{}
	for _, f := range req.Images {
		if !manifest.ValidName(f.Name) || names[f.Name] {
			return nil, fmt.Errorf("repo: image name %q (from %s) is invalid or given twice", f.Name, f.Path)
		}
		names[f.Name] = true
		size, sum, err := hashFile(f.Path)
		if err != nil {
			return nil, err
		}
		if size == 0 {
			return nil, fmt.Errorf("repo: image %s is empty", f.Path)
		}
		imgs = append(imgs, manifest.Image{Name: f.Name, Size: size, SHA256: sum})
	}
	res := &Result{Index: idx}
	now := o.now()
	for _, model := range req.Models {
		if !manifest.ValidName(model) {
			return nil, fmt.Errorf("repo: model name %q is invalid", model)
		}
		want := manifest.Release{Version: req.Version, Label: req.Label, Model: model, Published: now, Phased: phased, Images: append([]manifest.Image(nil), imgs...)}
		if old := idx.Find(req.Version, model); old != nil {
			if !old.SameContent(&want) {
				return nil, fmt.Errorf("%w: version %d for %s in channel %s; pick a new build number", ErrVersionExists, req.Version, model, req.Channel)
			}
			o.logf("version %d for %s already in %s with the same images; nothing to do", req.Version, model, req.Channel)
			continue
		}
		if n := idx.Newest(model); n >= req.Version {
			return nil, fmt.Errorf("%w: %d for %s, channel %s already has %d", ErrNotNewer, req.Version, model, req.Channel, n)
		}
		for i := range want.Images {
			im := &want.Images[i]
			src := req.Images[i].Path
			full, err := buildStream(ctx, o.Dir, model, im.Name, req.Version, 0, src, "")
			if err != nil {
				return nil, err
			}
			im.Full = full
			res.Streams = append(res.Streams, streamPath(model, im.Name, req.Version, 0))
		}
		if err := addDeltas(ctx, &o, idx, &want, res); err != nil {
			return nil, err
		}
		idx.Releases = append(idx.Releases, want)
		res.Changed = true
	}
	if req.Floor > idx.Floor {
		idx.Floor = req.Floor
		res.Changed = true
	}
	if !res.Changed {
		return res, nil
	}
	if err := writeIndex(&o, idx); err != nil {
		return nil, err
	}
	return res, nil
}

// addDeltas builds, for every image of rel, the deltas from the last
// o.Deltas releases of rel.Model in idx that are not there yet. The source
// image is rebuilt from its full stream (stream.Apply into a temporary
// file), so the repository never stores raw images.
func addDeltas(ctx context.Context, o *Options, idx *manifest.Index, rel *manifest.Release, res *Result) error {
	if o.Deltas <= 0 {
		return nil
	}
	tmp, err := os.MkdirTemp(o.Dir, ".sources-")
	if err != nil {
		return fmt.Errorf("repo: %w", err)
	}
	defer os.RemoveAll(tmp)
	// The target image: rebuilt from rel's own full stream, which also
	// works when promoting (the publisher no longer has the file).
	for i := range rel.Images {
		im := &rel.Images[i]
		var targetPath string
		for _, old := range idx.Recent(rel.Model, rel.Version, o.Deltas) {
			oi := old.Image(im.Name)
			if oi == nil || im.Delta(old.Version) != nil {
				continue
			}
			if targetPath == "" {
				targetPath = filepath.Join(tmp, fmt.Sprintf("%s-%d.img", im.Name, rel.Version))
				if err := rebuildImage(ctx, o.Dir, rel.Model, rel.Version, im, targetPath); err != nil {
					return err
				}
			}
			srcPath := filepath.Join(tmp, fmt.Sprintf("%s-%d.img", im.Name, old.Version))
			if err := rebuildImage(ctx, o.Dir, old.Model, old.Version, oi, srcPath); err != nil {
				return err
			}
			o.logf("delta %s %s: %d -> %d", rel.Model, im.Name, old.Version, rel.Version)
			s, err := buildStream(ctx, o.Dir, rel.Model, im.Name, rel.Version, old.Version, targetPath, srcPath)
			if err != nil {
				return err
			}
			im.Deltas = append(im.Deltas, manifest.Delta{From: old.Version, SourceSize: oi.Size, SourceSHA256: oi.SHA256, Stream: s})
			res.Streams = append(res.Streams, streamPath(rel.Model, im.Name, rel.Version, old.Version))
			if err := os.Remove(srcPath); err != nil {
				return fmt.Errorf("repo: %w", err)
			}
		}
	}
	return nil
}

// streamPath is the repository-relative path of a stream.
func streamPath(model, image string, v, from uint64) string {
	name := strconv.FormatUint(v, 10)
	if from != 0 {
		name += "-from-" + strconv.FormatUint(from, 10)
	}
	return path.Join("streams", model, image, name+".sus")
}

// buildStream writes a full (srcPath == "") or delta stream into place and
// returns its index entry (URL relative to channels/CH/index.json).
func buildStream(ctx context.Context, dir, model, image string, v, from uint64, targetPath, srcPath string) (manifest.Stream, error) {
	if err := ctx.Err(); err != nil {
		return manifest.Stream{}, err
	}
	rel := streamPath(model, image, v, from)
	dst := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return manifest.Stream{}, fmt.Errorf("repo: %w", err)
	}
	target, tsize, err := openSized(targetPath)
	if err != nil {
		return manifest.Stream{}, err
	}
	defer target.Close()
	var source io.ReaderAt
	var ssize int64
	if srcPath != "" {
		s, n, err := openSized(srcPath)
		if err != nil {
			return manifest.Stream{}, err
		}
		defer s.Close()
		source, ssize = s, n
	}
	var h *stream.Header
	err = atomicfile.Write(dst, 0o644, func(w io.Writer) error {
		var err error
		h, _, err = stream.Build(w, target, tsize, source, ssize, stream.BuildOptions{Context: ctx})
		return err
	})
	if err != nil {
		return manifest.Stream{}, fmt.Errorf("repo: build %s from %s: %w", rel, targetPath, err)
	}
	st, err := os.Stat(dst)
	if err != nil {
		return manifest.Stream{}, fmt.Errorf("repo: %w", err)
	}
	if st.Size() != h.StreamSize {
		return manifest.Stream{}, fmt.Errorf("repo: %s: wrote %d bytes but the header says %d", rel, st.Size(), h.StreamSize)
	}
	return manifest.Stream{URL: "../../" + rel, Size: h.StreamSize, Header: manifest.Hash(h.Hash)}, nil
}

// rebuildImage applies an image's full stream from the repository into a
// new file at dst and checks the result against the index.
func rebuildImage(ctx context.Context, dir, model string, v uint64, im *manifest.Image, dst string) error {
	rel := streamPath(model, im.Name, v, 0)
	src := filepath.Join(dir, filepath.FromSlash(rel))
	r, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("repo: source for a delta: %w", err)
	}
	defer r.Close()
	f, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("repo: %w", err)
	}
	defer f.Close()
	want := stream.Hash(im.Full.Header)
	h, err := stream.Apply(ctx, io.LimitReader(r, im.Full.Size), f, stream.ApplyOptions{ExpectHeader: &want, MaxStreamSize: im.Full.Size})
	if err != nil {
		return fmt.Errorf("repo: rebuild %s version %d from %s: %w", im.Name, v, rel, err)
	}
	if h.TargetSize != im.Size || manifest.Hash(h.TargetHash) != im.SHA256 {
		return fmt.Errorf("repo: %s produces %d bytes %x, the index says %d bytes %s", rel, h.TargetSize, h.TargetHash, im.Size, im.SHA256)
	}
	return nil
}

// PromoteRequest moves a release from one channel to another.
type PromoteRequest struct {
	From, To string
	Version  uint64
	// Phased is the rollout percentage in the destination channel,
	// 0..100; -1 means 100 for a new entry and unchanged for an existing
	// one.
	Phased int
}

// Promote copies every model's release of req.Version from channel From
// into channel To (the same streams; URLs stay valid because every index
// sits at the same depth), adds deltas from To's recent releases, and
// re-signs To's index. Promoting again with the same phase changes
// nothing; with another phase it updates the percentage (how a staged
// rollout widens). Crash safety is as for Publish.
func Promote(ctx context.Context, o Options, req PromoteRequest) (*Result, error) {
	if !manifest.ValidName(req.From) || !manifest.ValidName(req.To) || req.From == req.To {
		return nil, fmt.Errorf("repo: promote needs two different valid channel names, got %q and %q", req.From, req.To)
	}
	if req.Phased < -1 || req.Phased > 100 {
		return nil, fmt.Errorf("repo: phased %d is not a percentage", req.Phased)
	}
	if err := probeSigner(&o); err != nil {
		return nil, err
	}
	from, err := LoadIndex(o.Dir, req.From)
	if err != nil {
		return nil, err
	}
	if from.Generated.IsZero() {
		return nil, fmt.Errorf("%w: channel %s has no index in %s", ErrNotFound, req.From, o.Dir)
	}
	to, err := LoadIndex(o.Dir, req.To)
	if err != nil {
		return nil, err
	}
	res := &Result{Index: to}
	found := false
	for _, r := range from.Releases {
		if r.Version != req.Version {
			continue
		}
		found = true
		if old := to.Find(r.Version, r.Model); old != nil {
			if !old.SameContent(&r) {
				return nil, fmt.Errorf("%w: version %d for %s differs between %s and %s", ErrVersionExists, r.Version, r.Model, req.From, req.To)
			}
			if req.Phased >= 0 && old.Phased != req.Phased {
				o.logf("%s: version %d for %s: phased %d%% -> %d%%", req.To, r.Version, r.Model, old.Phased, req.Phased)
				old.Phased = req.Phased
				res.Changed = true
			}
			continue
		}
		if n := to.Newest(r.Model); n >= r.Version {
			return nil, fmt.Errorf("%w: %d for %s, channel %s already has %d", ErrNotNewer, r.Version, r.Model, req.To, n)
		}
		rel := r
		rel.Published = o.now()
		rel.Phased = 100
		if req.Phased >= 0 {
			rel.Phased = req.Phased
		}
		rel.Images = make([]manifest.Image, len(r.Images))
		for i, im := range r.Images {
			im.Deltas = append([]manifest.Delta(nil), im.Deltas...)
			rel.Images[i] = im
		}
		if err := addDeltas(ctx, &o, to, &rel, res); err != nil {
			return nil, err
		}
		to.Releases = append(to.Releases, rel)
		res.Changed = true
	}
	if !found {
		return nil, fmt.Errorf("%w: version %d is not in channel %s", ErrNotFound, req.Version, req.From)
	}
	if !res.Changed {
		return res, nil
	}
	if err := writeIndex(&o, to); err != nil {
		return nil, err
	}
	return res, nil
}

// Resign re-signs a channel's index with a fresh Generated and Expires,
// e.g. before the old one expires, or with a new key after a rotation.
func Resign(o Options, channel string) (*Result, error) {
	idx, err := LoadIndex(o.Dir, channel)
	if err != nil {
		return nil, err
	}
	if idx.Generated.IsZero() {
		return nil, fmt.Errorf("%w: channel %s has no index in %s", ErrNotFound, channel, o.Dir)
	}
	if err := writeIndex(&o, idx); err != nil {
		return nil, err
	}
	return &Result{Index: idx, Changed: true}, nil
}

// LoadIndex reads a channel's index from the repository without checking
// its signature (the publisher trusts its own disk). A missing index gives
// an empty one (Generated zero).
func LoadIndex(dir, channel string) (*manifest.Index, error) {
	if !manifest.ValidName(channel) {
		return nil, fmt.Errorf("repo: channel name %q is invalid", channel)
	}
	p := filepath.Join(dir, filepath.FromSlash(manifest.IndexPath(channel)))
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return &manifest.Index{Schema: manifest.Schema, Channel: channel, Releases: []manifest.Release{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("repo: %w", err)
	}
	idx, err := manifest.ParseIndex(p, b)
	if err != nil {
		return nil, err
	}
	if idx.Channel != channel {
		return nil, fmt.Errorf("repo: %s says it is channel %q", p, idx.Channel)
	}
	return idx, nil
}

// writeIndex stamps, signs and writes idx.
func writeIndex(o *Options, idx *manifest.Index) error {
	if o.Key == nil {
		return errors.New("repo: no signing key given")
	}
	now := o.now()
	if exp := o.Key.Expires(); !exp.IsZero() && !exp.After(now) {
		return fmt.Errorf("repo: signing key %s expired at %s; generate a new one and add it to the keyring", o.Key.Fingerprint(), exp.Format(time.RFC3339))
	}
	life := o.IndexLifetime
	if life <= 0 {
		life = DefaultIndexLifetime
	}
	idx.Generated = nextGenerated(idx.Generated, now)
	idx.Expires = idx.Generated.Add(life)
	if exp := o.Key.Expires(); !exp.IsZero() && idx.Expires.After(exp) {
		idx.Expires = exp // never outlive the key that vouches for it
	}
	b, err := idx.Marshal()
	if err != nil {
		return err
	}
	if err := idx.Validate(); err != nil {
		return fmt.Errorf("repo: refusing to write an invalid index: %w", err)
	}
	sig, err := o.Key.Sign(b, now) // real time: Generated may be a second ahead
	if err != nil {
		return err
	}
	p := filepath.Join(o.Dir, filepath.FromSlash(manifest.IndexPath(idx.Channel)))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("repo: %w", err)
	}
	if err := atomicfile.WriteFile(p, b, 0o644); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(p+trust.SigSuffix, sig, 0o644); err != nil {
		return err
	}
	o.logf("signed %s (generated %s, expires %s) with %s", manifest.IndexPath(idx.Channel), idx.Generated.Format(time.RFC3339), idx.Expires.Format(time.RFC3339), o.Key.Fingerprint())
	return nil
}

func openSized(p string) (*os.File, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, 0, fmt.Errorf("repo: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("repo: %w", err)
	}
	return f, st.Size(), nil
}

func hashFile(p string) (int64, manifest.Hash, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, manifest.Hash{}, fmt.Errorf("repo: image: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, manifest.Hash{}, fmt.Errorf("repo: read image %s at offset %d: %w", p, n, err)
	}
	var sum manifest.Hash
	copy(sum[:], h.Sum(nil))
	return n, sum, nil
}
