// Package client is the device side of sysupdate's trust model: it fetches
// a channel index, verifies it against the signing keyring, the keyring
// against the master keys baked into the device, honours the revocation
// list, and decides what (if anything) to install and by which stream.
//
// Check refuses, with a sentinel error per attack: bad or missing
// signatures and untrusted keys (arbitrary package), revoked or expired
// keys, expired or replayed metadata (indefinite freeze), releases older
// than the installed one or below the floor (rollback), releases for
// another model (wrong hardware), another channel's index (mix-and-match),
// and phased releases this device is not in. Download refuses a stream
// whose size or header differs from the signed index (endless data,
// mix-and-match) before it writes a byte.
package client

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sysupdate/sysupdate/fetch"
	"github.com/sysupdate/sysupdate/manifest"
	"github.com/sysupdate/sysupdate/stream"
	"github.com/sysupdate/sysupdate/trust"
)

// Refusals callers branch on. Signature and key problems wrap the trust
// package's sentinels (trust.ErrNoSignature, ErrBadSignature,
// ErrUnknownKey, ErrRevoked, ErrExpired) instead.
var (
	// ErrIndexExpired: the index is past its expiry (a frozen mirror).
	ErrIndexExpired = errors.New("client: index expired")
	// ErrReplayed: the index, keyring or revocation list is older than
	// one this device already accepted.
	ErrReplayed = errors.New("client: metadata older than what this device already accepted")
	// ErrWrongChannel: the index is for another channel.
	ErrWrongChannel = errors.New("client: index is for another channel")
	// ErrRollback: the release is older than the installed one.
	ErrRollback = errors.New("client: release older than the installed one")
	// ErrBelowFloor: the release is below the lowest allowed version.
	ErrBelowFloor = errors.New("client: release below the version floor")
	// ErrWrongModel: the index has no release for this hardware model.
	ErrWrongModel = errors.New("client: no release for this hardware model")
	// ErrNoSuchVersion: the requested version is not in the channel.
	ErrNoSuchVersion = errors.New("client: requested version not in the channel")
	// ErrNotInPhase: the newer release is phased and this device is not
	// in its percentage yet.
	ErrNotInPhase = errors.New("client: release is phased and this device is not in the rollout yet")
	// ErrStreamSize: a file holds more (or fewer) bytes than declared.
	ErrStreamSize = errors.New("client: size differs from the signed index")
	// ErrStreamMismatch: a stream is not the one the signed index names.
	ErrStreamMismatch = errors.New("client: stream differs from the signed index")
	// ErrBadIndex: the index is correctly signed but invalid (a stream URL
	// outside the repository, a broken field): the publisher is broken.
	ErrBadIndex = errors.New("client: the signed index is invalid")
	// ErrIndexSchema: the index uses a schema this sysupdate cannot read.
	ErrIndexSchema = errors.New("client: index schema newer than this sysupdate reads")
	// ErrTooLarge: a metadata file is larger than a device accepts.
	ErrTooLarge = errors.New("client: metadata file too large")
	// ErrUnavailable: the repository could not be reached or read (an
	// outage, a timeout, a server error, a missing file): nothing is wrong
	// with what was signed; try again later.
	ErrUnavailable = errors.New("client: repository unavailable")
)

// Opener fetches repository files. *fetch.Client and *bundle.Bundle
// implement it.
type Opener interface {
	// OpenRange returns a reader of the bytes from off to end (exclusive)
	// of the size-byte file at url.
	OpenRange(ctx context.Context, url string, size, off, end int64) (io.ReadCloser, error)
	// Get fetches a small file whole; more than max bytes is an error.
	Get(ctx context.Context, url string, max int64) ([]byte, error)
}

var _ Opener = (*fetch.Client)(nil)

// Config is everything Check needs to know about the device. The CLI fills
// it from flags; a config file will later.
type Config struct {
	// RepoURL is the repository root: https://, http://, file:// or a
	// plain directory (a USB stick in recovery).
	RepoURL string
	// Channel to follow ("stable").
	Channel string
	// Model is this device's hardware model.
	Model string
	// MasterKeys is the path of the armored master public keys baked into
	// the device image.
	MasterKeys string
	// StatePath is the device state file (see State).
	StatePath string
	// MachineIDPath is the file holding the machine ID that phasing draws
	// from; "" means /etc/machine-id.
	MachineIDPath string
	// Installed is the running version; 0 means take it from the state.
	Installed uint64
	// Floor is a device-side lowest allowed version, on top of the index's.
	Floor uint64
	// AllowDowngrade lets the user install an older release or one below
	// the floor, deliberately.
	AllowDowngrade bool
	// Version, when non-zero, asks for that version instead of the newest.
	Version uint64
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Mirrors are roots of copies of the repository (the same layout:
	// URLs or directories) that Download takes streams from, in order,
	// before RepoURL. Check reads the signed metadata from RepoURL, and
	// from the mirrors only when RepoURL is unavailable.
	Mirrors []string
	// MirrorOpener fetches from the mirrors; nil means the Opener New
	// was given.
	MirrorOpener Opener
}

// Client checks a repository for one device.
type Client struct {
	cfg     Config
	op      Opener
	mop     Opener // for the mirrors
	masters []*trust.Key

	mu   sync.Mutex
	down map[string]error // mirrors (redacted roots) found unreachable, and why
}

// unreachable reports whether err says a source could not be reached at
// all or was too slow (no connection, no name, a timeout, below the
// minimum rate), rather than that it lacks a file or serves wrong bytes:
// such a mirror is not asked again by this Client, so a dead mirror costs
// one timeout per run, not one per file.
func unreachable(err error) bool {
	var op *net.OpError
	var dns *net.DNSError
	var ne net.Error
	return (errors.As(err, &op) && op.Op == "dial") || errors.As(err, &dns) ||
		(errors.As(err, &ne) && ne.Timeout()) || errors.Is(err, fetch.ErrTooSlow)
}

// mirrorDown returns why the mirror with redacted root was found
// unreachable earlier by this Client, or nil.
func (c *Client) mirrorDown(root string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.down[root]
}

// mirrorFailed records err for the mirror if it says the mirror is
// unreachable.
func (c *Client) mirrorFailed(root string, err error) {
	if !unreachable(err) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down == nil {
		c.down = map[string]error{}
	}
	if c.down[root] == nil {
		c.down[root] = err
	}
}

// fromMirrors asks the mirrors in order, with try(root), for what the
// repository failed to give with repoErr, skipping those found
// unreachable before, and returns the redacted root of the first that
// gave it. When none does, the error is repoErr naming each mirror and
// why; when ctx ends, the mirror's error.
func (c *Client) fromMirrors(ctx context.Context, repoErr error, try func(root string) error) (string, error) {
	var tried []string
	for _, m := range c.cfg.Mirrors {
		root := rootURL(m)
		name := fetch.Redact(root)
		if why := c.mirrorDown(name); why != nil {
			tried = append(tried, skipped(name, why))
			continue
		}
		err := try(root)
		if err == nil {
			return name, nil
		}
		if ctx.Err() != nil {
			return "", err
		}
		c.mirrorFailed(name, err)
		tried = append(tried, fmt.Sprintf("mirror %s: %v", name, err))
	}
	return "", fmt.Errorf("%w (and from the mirrors: %s)", repoErr, strings.Join(tried, "; "))
}

// skipped is the message for a mirror passed over because it was found
// unreachable before.
func skipped(root string, why error) string {
	return fmt.Sprintf("mirror %s: not asked again: unreachable earlier in this run (%v)", root, why)
}

// New reads the master keys and returns a Client.
func New(cfg Config, op Opener) (*Client, error) {
	for _, f := range []struct{ v, name string }{{cfg.RepoURL, "repository URL"}, {cfg.Channel, "channel"}, {cfg.Model, "model"}, {cfg.MasterKeys, "master keys file"}, {cfg.StatePath, "state file"}} {
		if f.v == "" {
			return nil, fmt.Errorf("client: no %s configured", f.name)
		}
	}
	if !manifest.ValidName(cfg.Channel) {
		return nil, fmt.Errorf("client: channel name %q is invalid", cfg.Channel)
	}
	b, err := os.ReadFile(cfg.MasterKeys)
	if err != nil {
		return nil, fmt.Errorf("client: master keys: %w", err)
	}
	masters, err := trust.ReadKeys(cfg.MasterKeys, b)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	for _, m := range masters {
		if m.HasPrivate() {
			return nil, fmt.Errorf("client: %s holds the private master key %s; a device must carry only the public half", cfg.MasterKeys, m.Fingerprint())
		}
	}
	mop := cfg.MirrorOpener
	if mop == nil {
		mop = op
	}
	return &Client{cfg: cfg, op: op, mop: mop, masters: masters}, nil
}

// Plan is the outcome of Check: the verified index, the release chosen
// (nil when there is nothing to do) and why.
type Plan struct {
	Channel  string `json:"channel"`
	Model    string `json:"model"`
	IndexURL string `json:"index_url"`
	// IndexFrom is the mirror the index was read from because the
	// repository was unavailable ("" when it came from the repository).
	IndexFrom string    `json:"index_from,omitempty"`
	Generated time.Time `json:"generated"`
	Expires   time.Time `json:"expires"`
	// SignedBy is the fingerprint of the key that signed the index.
	SignedBy  string `json:"signed_by"`
	Installed uint64 `json:"installed"`
	// Release is the release to install, nil when up to date.
	Release *manifest.Release `json:"release,omitempty"`
	// Images are the streams to fetch, one per image of Release.
	Images []ImagePlan `json:"images,omitempty"`
	// Reasons explain the decision, one line per release considered.
	Reasons []string `json:"reasons"`
}

// ImagePlan is one image to install and the stream chosen for it.
type ImagePlan struct {
	Name string `json:"name"`
	// URL is absolute (resolved against the index URL), without userinfo;
	// the client fetches from the URL with it.
	URL    string `json:"url"`
	rawURL string
	// Size and Header pin the stream.
	Size   int64         `json:"size"`
	Header manifest.Hash `json:"header"`
	// Delta is true for a delta from version From, whose image must have
	// SourceSize bytes hashing to SourceSHA256 (the active slot).
	Delta        bool          `json:"delta"`
	From         uint64        `json:"from,omitempty"`
	SourceSize   int64         `json:"source_size,omitempty"`
	SourceSHA256 manifest.Hash `json:"source_sha256,omitzero"`
	// TargetSize and TargetSHA256 describe the resulting image.
	TargetSize   int64         `json:"target_size"`
	TargetSHA256 manifest.Hash `json:"target_sha256"`
	// FullURL, FullSize and FullHeader are the full-image stream, the
	// fallback when a delta's source does not match.
	FullURL    string        `json:"full_url"`
	FullSize   int64         `json:"full_size"`
	FullHeader manifest.Hash `json:"full_header"`
	rawFullURL string
}

// Full returns the plan for the image's full-image stream: the fallback
// when the running slot is not the delta's source.
func (p ImagePlan) Full() ImagePlan {
	f := p
	f.Delta, f.From, f.SourceSize, f.SourceSHA256 = false, 0, 0, manifest.Hash{}
	f.URL, f.rawURL, f.Size, f.Header = p.FullURL, p.rawFullURL, p.FullSize, p.FullHeader
	return f
}

// Check fetches and verifies the chain and the channel index, records the
// accepted metadata timestamps in the state file, and chooses a release.
// It returns a Plan with Release nil when the device is up to date, or an
// error wrapping one of the refusal sentinels. Check never writes to a
// slot; the state file is the only thing it changes, atomically.
func (c *Client) Check(ctx context.Context) (*Plan, error) {
	st, err := LoadState(c.cfg.StatePath)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	if c.cfg.Now != nil {
		now = c.cfg.Now()
	}
	// A device whose clock is behind (no RTC) never moves trust backwards:
	// time is at least the newest metadata it has accepted.
	for _, t := range []time.Time{st.Keyring, st.Revocations, st.Indexes[c.cfg.Channel]} {
		if t.After(now) {
			now = t
		}
	}
	chain, chainFrom, err := c.chain(ctx, st, now)
	if err != nil {
		return nil, err
	}
	// The chain is authentic and fresh: remember it (and every revocation)
	// now, even if the index turns out bad, so an older list cannot be
	// replayed to un-revoke a key.
	changed := false
	if chain.Keyring.Created.After(st.Keyring) {
		st.Keyring, changed = chain.Keyring.Created, true
	}
	if chain.Revocations.Created.After(st.Revocations) {
		st.Revocations, changed = chain.Revocations.Created, true
	}
	for _, r := range chain.Revocations.Revoked {
		if !st.isRevoked(r.Fingerprint) {
			st.Revoked, changed = append(st.Revoked, r.Fingerprint), true
		}
	}
	if changed {
		if err := st.Save(c.cfg.StatePath); err != nil {
			return nil, err
		}
	}
	// Stream URLs resolve against the repository's index URL wherever
	// the index bytes came from: a mirror has the same layout.
	indexURL := c.resolve(manifest.IndexPath(c.cfg.Channel))
	idx, signer, idxFrom, err := c.index(ctx, chain, st, now)
	if err != nil {
		return nil, err
	}
	// Authentic and fresh: remember it before deciding anything else.
	if st.Indexes == nil {
		st.Indexes = map[string]time.Time{}
	}
	if idx.Generated.After(st.Indexes[c.cfg.Channel]) {
		st.Indexes[c.cfg.Channel] = idx.Generated
		if err := st.Save(c.cfg.StatePath); err != nil {
			return nil, err
		}
	}
	installed := c.cfg.Installed
	if installed == 0 {
		installed = st.Installed
	}
	plan := &Plan{Channel: idx.Channel, Model: c.cfg.Model, IndexURL: fetch.Redact(indexURL), IndexFrom: idxFrom, Generated: idx.Generated, Expires: idx.Expires, SignedBy: signer.Fingerprint(), Installed: installed}
	if chainFrom != "" {
		plan.Reasons = append(plan.Reasons, fmt.Sprintf("the repository is unavailable: keyring and revocations read from mirror %s", chainFrom))
	}
	if idxFrom != "" {
		plan.Reasons = append(plan.Reasons, fmt.Sprintf("the repository is unavailable: index read from mirror %s", idxFrom))
	}
	rel, err := c.choose(idx, installed, plan)
	if err != nil {
		return plan, err
	}
	if rel == nil {
		return plan, nil
	}
	plan.Release = rel
	for _, im := range rel.Images {
		full, err := c.streamURL(indexURL, im.Full.URL)
		if err != nil {
			return plan, err
		}
		ip := ImagePlan{Name: im.Name, URL: fetch.Redact(full), rawURL: full, Size: im.Full.Size, Header: im.Full.Header,
			TargetSize: im.Size, TargetSHA256: im.SHA256, FullURL: fetch.Redact(full), rawFullURL: full, FullSize: im.Full.Size, FullHeader: im.Full.Header}
		if d := im.Delta(installed); installed != 0 && d != nil && d.Size < im.Full.Size {
			du, err := c.streamURL(indexURL, d.URL)
			if err != nil {
				return plan, err
			}
			ip.URL, ip.rawURL, ip.Size, ip.Header = fetch.Redact(du), du, d.Size, d.Header
			ip.Delta, ip.From, ip.SourceSize, ip.SourceSHA256 = true, d.From, d.SourceSize, d.SourceSHA256
			plan.Reasons = append(plan.Reasons, fmt.Sprintf("%s: delta from %d (%d bytes instead of %d)", im.Name, d.From, d.Size, im.Full.Size))
		} else {
			plan.Reasons = append(plan.Reasons, fmt.Sprintf("%s: full stream (%d bytes; no delta from %d)", im.Name, im.Full.Size, installed))
		}
		plan.Images = append(plan.Images, ip)
	}
	return plan, nil
}

// choose picks the release to install per the policy in the package doc.
func (c *Client) choose(idx *manifest.Index, installed uint64, plan *Plan) (*manifest.Release, error) {
	var rels []*manifest.Release
	models := map[string]bool{}
	for i := range idx.Releases {
		r := &idx.Releases[i]
		models[r.Model] = true
		if r.Model == c.cfg.Model {
			rels = append(rels, r)
		}
	}
	if len(rels) == 0 {
		var ms []string
		for m := range models {
			ms = append(ms, m)
		}
		sort.Strings(ms)
		return nil, fmt.Errorf("client: channel %s has releases for %v, none for model %q: %w", idx.Channel, ms, c.cfg.Model, ErrWrongModel)
	}
	sort.Slice(rels, func(i, j int) bool { return rels[i].Version > rels[j].Version })
	floor := max(idx.Floor, c.cfg.Floor)
	var chosen *manifest.Release
	if c.cfg.Version != 0 {
		for _, r := range rels {
			if r.Version == c.cfg.Version {
				chosen = r
			}
		}
		if chosen == nil {
			return nil, fmt.Errorf("client: version %d for %s is not in channel %s (newest is %d): %w", c.cfg.Version, c.cfg.Model, idx.Channel, rels[0].Version, ErrNoSuchVersion)
		}
		if !c.inPhase(chosen) {
			return nil, fmt.Errorf("client: version %d is phased to %d%% and this device is not in it: %w", chosen.Version, chosen.Phased, ErrNotInPhase)
		}
	} else {
		newest := rels[0]
		if newest.Version < installed && !c.cfg.AllowDowngrade {
			return nil, fmt.Errorf("client: the newest release in %s is %d, older than the installed %d; refusing a rollback (pass --allow-downgrade to install it anyway): %w", idx.Channel, newest.Version, installed, ErrRollback)
		}
		phasedOut := 0
		for _, r := range rels {
			if r.Version <= installed && !(c.cfg.AllowDowngrade && newest.Version < installed) {
				break
			}
			if !c.inPhase(r) {
				plan.Reasons = append(plan.Reasons, fmt.Sprintf("version %d: phased to %d%%, this device is not in it yet", r.Version, r.Phased))
				phasedOut++
				continue
			}
			chosen = r
			break
		}
		if chosen == nil {
			if phasedOut > 0 {
				return nil, fmt.Errorf("client: %d newer release(s) in %s, all phased and this device is not in them yet: %w", phasedOut, idx.Channel, ErrNotInPhase)
			}
			plan.Reasons = append(plan.Reasons, fmt.Sprintf("version %d is installed and is the newest in %s: up to date", installed, idx.Channel))
			return nil, nil
		}
	}
	if chosen.Version == installed {
		plan.Reasons = append(plan.Reasons, fmt.Sprintf("version %d is already installed", installed))
		return nil, nil
	}
	if chosen.Version < installed && !c.cfg.AllowDowngrade {
		return nil, fmt.Errorf("client: version %d is older than the installed %d; refusing a rollback (pass --allow-downgrade to install it anyway): %w", chosen.Version, installed, ErrRollback)
	}
	if chosen.Version < floor && !c.cfg.AllowDowngrade {
		return nil, fmt.Errorf("client: version %d is below the floor %d; refusing (pass --allow-downgrade to install it anyway): %w", chosen.Version, floor, ErrBelowFloor)
	}
	why := "newest release for " + c.cfg.Model
	if c.cfg.Version != 0 {
		why = "requested"
	}
	if chosen.Version < installed {
		why += ", downgrade allowed explicitly"
	}
	if chosen.Phased < 100 {
		why += fmt.Sprintf(", phased %d%% and this device is in it", chosen.Phased)
	}
	plan.Reasons = append(plan.Reasons, fmt.Sprintf("version %d: install (%s)", chosen.Version, why))
	return chosen, nil
}

// inPhase reports whether this device falls in r's rollout percentage.
func (c *Client) inPhase(r *manifest.Release) bool {
	if r.Phased >= 100 {
		return true
	}
	if r.Phased <= 0 {
		return false
	}
	p := c.cfg.MachineIDPath
	if p == "" {
		p = "/etc/machine-id"
	}
	id, err := os.ReadFile(p)
	if err != nil || len(strings.TrimSpace(string(id))) == 0 {
		return false // no machine ID: wait for the full rollout
	}
	return PhaseBucket(strings.TrimSpace(string(id)), r.Version) < r.Phased
}

// PhaseBucket maps a machine ID and a version to 0..99, uniformly and
// deterministically: a device is in a release phased to P% when its bucket
// is below P. The version is part of the input so the same devices are not
// always first.
func PhaseBucket(machineID string, version uint64) int {
	sum := sha256.Sum256([]byte(machineID + "/" + strconv.FormatUint(version, 10)))
	return int(binary.BigEndian.Uint64(sum[:8]) % 100)
}

// root returns the repository root as a URL ending in "/": a plain
// directory becomes a file:// URL, so every path resolves the same way
// whatever the medium.
func (c *Client) root() string { return rootURL(c.cfg.RepoURL) }

// rootURL is root for any repository root (the origin or a mirror).
func rootURL(base string) string {
	if !strings.Contains(base, "://") {
		abs, err := filepath.Abs(base)
		if err == nil {
			base = (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}).String()
		}
	}
	if !strings.HasSuffix(base, "/") {
		base += "/"
	}
	return base
}

// resolve returns the URL of a repository-relative path.
func (c *Client) resolve(rel string) string {
	u, err := resolveRef(c.root(), rel)
	if err != nil {
		return c.root() + rel
	}
	return u
}

func resolveRef(base, rel string) (string, error) {
	b, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	r, err := url.Parse(rel)
	if err != nil {
		return "", err
	}
	return b.ResolveReference(r).String(), nil
}

// streamURL resolves a stream URL of the index at indexURL and refuses
// one that leaves the repository (another host, or ../ past the root),
// for directories, bundles and HTTP alike.
func (c *Client) streamURL(indexURL, rel string) (string, error) {
	u, err := resolveRef(indexURL, rel)
	root := c.root()
	if err != nil || !strings.HasPrefix(u, root) {
		return "", fmt.Errorf("client: %s names the stream %q, which resolves outside the repository %s: %w", fetch.Redact(indexURL), rel, fetch.Redact(root), ErrBadIndex)
	}
	return u, nil
}

// index fetches the channel index and its signature and checks them
// (signature, signer not revoked, schema, channel, expiry, not older than
// the index accepted before). It reads the repository; only when the
// repository is unavailable (ErrUnavailable) does it ask the mirrors, in
// order, taking the first whose index passes every check: a mirror can
// at worst be as stale as the index this device accepted last, and never
// past that index's expiry. from is that mirror's root, "" for the
// repository. When every mirror fails too, the error is the repository's,
// naming each mirror and why it was passed over.
func (c *Client) index(ctx context.Context, chain *trust.Chain, st *State, now time.Time) (idx *manifest.Index, signer *trust.Key, from string, err error) {
	rel := manifest.IndexPath(c.cfg.Channel)
	u := c.resolve(rel)
	idx, signer, err = c.checkIndex(ctx, c.op, u, fetch.Redact(u), chain, st, now)
	if err == nil || !errors.Is(err, ErrUnavailable) || len(c.cfg.Mirrors) == 0 || ctx.Err() != nil {
		return idx, signer, "", err
	}
	from, merr := c.fromMirrors(ctx, err, func(root string) error {
		var e error
		idx, signer, e = c.checkIndex(ctx, c.mop, root+rel, fetch.Redact(root+rel)+" (from a mirror: the repository is unavailable)", chain, st, now)
		return e
	})
	if merr != nil {
		return nil, nil, "", merr
	}
	return idx, signer, from, nil
}

// checkIndex fetches the index at u with op and checks it; name is u for
// messages.
func (c *Client) checkIndex(ctx context.Context, op Opener, u, name string, chain *trust.Chain, st *State, now time.Time) (*manifest.Index, *trust.Key, error) {
	ib, err := c.get(ctx, op, u, manifest.MaxIndexSize, false)
	if err != nil {
		return nil, nil, err
	}
	isig, err := c.get(ctx, op, u+trust.SigSuffix, 1<<16, true)
	if err != nil {
		return nil, nil, err
	}
	signer, err := chain.Verify(name, ib, isig, now)
	if err != nil {
		return nil, nil, fmt.Errorf("client: %w", err)
	}
	for _, fp := range []string{signer.Fingerprint(), chain.KeyringSigner.Fingerprint(), chain.RevocationsSigner.Fingerprint()} {
		if st.isRevoked(fp) {
			return nil, nil, fmt.Errorf("client: key %s was revoked by an earlier revocation list this device accepted: %w", fp, trust.ErrRevoked)
		}
	}
	idx, err := manifest.ParseIndex(name, ib)
	if err != nil {
		if errors.Is(err, manifest.ErrSchema) {
			return nil, nil, fmt.Errorf("client: %w: %w", ErrIndexSchema, err)
		}
		return nil, nil, fmt.Errorf("client: %w (signed, so the publisher is broken: tell them): %w", ErrBadIndex, err)
	}
	if idx.Channel != c.cfg.Channel {
		return nil, nil, fmt.Errorf("client: %s says it is channel %q, this device follows %q: %w", name, idx.Channel, c.cfg.Channel, ErrWrongChannel)
	}
	if now.After(idx.Expires) {
		return nil, nil, fmt.Errorf("client: %s expired at %s (now %s): the mirror may be frozen or the publisher must re-sign: %w", name, idx.Expires.Format(time.RFC3339), now.UTC().Format(time.RFC3339), ErrIndexExpired)
	}
	if prev := st.Indexes[c.cfg.Channel]; idx.Generated.Before(prev) {
		return nil, nil, fmt.Errorf("client: %s generated %s is older than the index accepted before (%s): %w", name, idx.Generated.Format(time.RFC3339), prev.Format(time.RFC3339), ErrReplayed)
	}
	return idx, signer, nil
}

// chain fetches the revocation list and the signing keyring with their
// signatures and verifies them against the master keys, refusing either
// when older than what this device accepted before. Like index, it reads
// the repository, and the mirrors in order only when the repository is
// unavailable, taking the first mirror whose files pass every check.
func (c *Client) chain(ctx context.Context, st *State, now time.Time) (*trust.Chain, string, error) {
	ch, err := c.checkChain(ctx, c.op, c.root(), "", st, now)
	if err == nil || !errors.Is(err, ErrUnavailable) || len(c.cfg.Mirrors) == 0 || ctx.Err() != nil {
		return ch, "", err
	}
	from, merr := c.fromMirrors(ctx, err, func(root string) error {
		var e error
		ch, e = c.checkChain(ctx, c.mop, root, " (from mirror "+fetch.Redact(root)+": the repository is unavailable)", st, now)
		return e
	})
	if merr != nil {
		return nil, "", merr
	}
	return ch, from, nil
}

// checkChain is chain from one source: root is its root URL, from is
// added to messages.
func (c *Client) checkChain(ctx context.Context, op Opener, root, from string, st *State, now time.Time) (*trust.Chain, error) {
	var files trust.ChainFiles
	for _, f := range []struct {
		rel string
		dst *[]byte
	}{
		{trust.RevocationsPath, &files.Revocations}, {trust.RevocationsPath + trust.SigSuffix, &files.RevocationsSig},
		{trust.KeyringPath, &files.Keyring}, {trust.KeyringPath + trust.SigSuffix, &files.KeyringSig},
	} {
		var err error
		if *f.dst, err = c.get(ctx, op, root+f.rel, 1<<20, strings.HasSuffix(f.rel, trust.SigSuffix)); err != nil {
			return nil, err
		}
	}
	chain, err := trust.VerifyChain(c.masters, files, now)
	if err != nil {
		return nil, fmt.Errorf("client: %w%s", err, from)
	}
	if chain.Keyring.Created.Before(st.Keyring) {
		return nil, fmt.Errorf("client: %s%s created %s is older than the keyring accepted before (%s): %w", trust.KeyringPath, from, chain.Keyring.Created.Format(time.RFC3339), st.Keyring.Format(time.RFC3339), ErrReplayed)
	}
	if chain.Revocations.Created.Before(st.Revocations) {
		return nil, fmt.Errorf("client: %s%s created %s is older than the list accepted before (%s): %w", trust.RevocationsPath, from, chain.Revocations.Created.Format(time.RFC3339), st.Revocations.Format(time.RFC3339), ErrReplayed)
	}
	return chain, nil
}

// get fetches a metadata file; a missing signature is ErrNoSignature.
func (c *Client) get(ctx context.Context, op Opener, u string, max int64, isSig bool) ([]byte, error) {
	b, err := op.Get(ctx, u, max)
	if err != nil {
		name := fetch.Redact(u)
		if errors.Is(err, fetch.ErrTooLarge) {
			return nil, fmt.Errorf("client: %s: %w (more than %d bytes): %w", name, ErrTooLarge, max, err)
		}
		var se *fetch.StatusError
		if isSig && (errors.Is(err, os.ErrNotExist) || errors.As(err, &se) && se.Code == 404) {
			return nil, fmt.Errorf("client: %s: %w: %w", name, trust.ErrNoSignature, err)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		return nil, fmt.Errorf("client: %w: %w", ErrUnavailable, err)
	}
	return b, nil
}

// fetchErr tags errors of the stream's reader, so Download can tell an
// outage from a stream that is wrong.
type fetchErr struct{ err error }

func (e *fetchErr) Error() string { return e.err.Error() }
func (e *fetchErr) Unwrap() error { return e.err }

type taggedReader struct{ r io.Reader }

func (t taggedReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		err = &fetchErr{err}
	}
	return n, err
}

// DownloadOptions tune Download.
type DownloadOptions struct {
	// Progress is called after each op (target bytes done, total).
	Progress func(done, total int64)
	// Resume, when non-nil, continues from this checkpoint: only what
	// follows it is fetched (stream.Resume). A checkpoint that does not
	// fit fails with an error wrapping stream.ErrCheckpoint before
	// anything is written.
	Resume *stream.Checkpoint
	// OnCheckpoint receives durable checkpoints (see stream.ApplyOptions).
	OnCheckpoint func(stream.Checkpoint) error
	// SkipUnchanged skips writes of bytes the target already holds.
	SkipUnchanged bool
	// ReadBack reads every chunk back from the medium as it goes (see
	// stream.ApplyOptions.ReadBack): when Download returns nil, the
	// target's content was verified on the medium.
	ReadBack bool
	// Stats is filled in when non-nil, summed over every source read.
	Stats *stream.ApplyStats
	// OnSource, when non-nil and mirrors are configured, is called when
	// Download starts reading from a source and when it abandons one
	// (SourceEvent.Err says why).
	OnSource func(SourceEvent)
}

// SourceEvent reports the source Download reads a stream from.
type SourceEvent struct {
	// Source is the root of the mirror or of the repository, without
	// userinfo; Mirror is false for the repository itself.
	Source string
	Mirror bool
	// URL is the stream's URL at Source, without userinfo.
	URL string
	// At is the target offset Download continues from at Source: 0, or
	// the last checkpoint verified and synced before the switch.
	At int64
	// Err is nil when Download starts reading from Source; otherwise it
	// is why Download abandoned Source for the next one (a missing file,
	// an outage or timeout, another size, bytes that fail verification),
	// wrapping the same sentinels as Download's errors.
	Err error
}

// Target is an inactive slot: written, and read back for resumes and
// skipped writes.
type Target interface {
	io.ReaderAt
	io.WriterAt
}

// streamSource is one place a stream can be read from.
type streamSource struct {
	root   string // redacted root, for messages
	raw    string // the stream's URL there, for requests
	op     Opener
	mirror bool
}

// sources lists where the stream at raw (a URL under the repository root)
// can be read from: every mirror in order, then the repository.
func (c *Client) sources(raw string) []streamSource {
	var srcs []streamSource
	if root := c.root(); strings.HasPrefix(raw, root) {
		rel := strings.TrimPrefix(raw, root)
		for _, m := range c.cfg.Mirrors {
			mr := rootURL(m)
			srcs = append(srcs, streamSource{root: fetch.Redact(mr), raw: mr + rel, op: c.mop, mirror: true})
		}
	}
	return append(srcs, streamSource{root: fetch.Redact(c.root()), raw: raw, op: c.op})
}

// Download streams one image of a plan into target (the inactive slot),
// reading the source (the active slot) for deltas. It opens exactly
// img.Size bytes, never reads more, and hands them to stream.Apply (or
// stream.Resume) with the signed header hash: a stream of another size or
// header is refused (ErrStreamSize, ErrStreamMismatch) before anything is
// written. An outage, a timeout or a server error is ErrUnavailable. When
// it returns nil, target holds the image with img.TargetSHA256 and has
// been synced if it is a file. On other errors target holds a partial
// image that must not be booted.
//
// With mirrors configured (Config.Mirrors), the stream is read from each
// mirror in order, then from the repository: a source that fails (a
// missing file, an outage, a timeout or a transfer slower than the
// fetcher's minimum rate, another size, another header, or bytes that
// fail verification) is abandoned for the next, which continues from the
// last checkpoint taken (the target must then be a stream.Syncer; else
// the next source starts over). A mirror that could not be reached at all
// or was too slow (see unreachable) is not asked again by this Client.
// Since stream.Apply checks every op's bytes against the signed header
// before it decodes or writes them, no byte a mirror altered reaches the
// target. The error of the last source
// is returned, naming every mirror abandoned before it and why.
func (c *Client) Download(ctx context.Context, img ImagePlan, target Target, source io.ReaderAt, o DownloadOptions) (*stream.Header, error) {
	raw := img.rawURL
	if raw == "" {
		raw = img.URL
	}
	srcs := c.sources(raw)
	resume := o.Resume
	var abandoned []string
	for i, s := range srcs {
		if why := c.mirrorDown(s.root); s.mirror && why != nil {
			abandoned = append(abandoned, skipped(s.root, why))
			continue
		}
		multi := len(srcs) > 1
		var st stream.ApplyStats
		onCheckpoint := o.OnCheckpoint
		if multi {
			// Remember the last durable point, so the next source
			// continues from there.
			onCheckpoint = func(cp stream.Checkpoint) error {
				if o.OnCheckpoint != nil {
					if err := o.OnCheckpoint(cp); err != nil {
						return err
					}
				}
				resume = &cp
				return nil
			}
			if o.OnSource != nil {
				o.OnSource(SourceEvent{Source: s.root, Mirror: s.mirror, URL: fetch.Redact(s.raw), At: atOf(resume)})
			}
		}
		h, fault, err := c.downloadFrom(ctx, s, img, target, source, o, resume, onCheckpoint, &st)
		if o.Stats != nil {
			o.Stats.Written += st.Written
			o.Stats.Skipped += st.Skipped
			o.Stats.Zeroed += st.Zeroed
			o.Stats.ReadBack += st.ReadBack
			o.Stats.Checkpoints += st.Checkpoints
			o.Stats.StreamRead += st.StreamRead
		}
		if err == nil || i == len(srcs)-1 || !fault || ctx.Err() != nil {
			if err != nil && len(abandoned) > 0 {
				err = fmt.Errorf("%w (abandoned before it: %s)", err, strings.Join(abandoned, "; "))
			}
			return h, err
		}
		c.mirrorFailed(s.root, err)
		abandoned = append(abandoned, fmt.Sprintf("mirror %s: %v", s.root, err))
		if o.OnSource != nil {
			o.OnSource(SourceEvent{Source: s.root, Mirror: s.mirror, URL: fetch.Redact(s.raw), At: atOf(resume), Err: err})
		}
	}
	return nil, fmt.Errorf("client: %s: no source", img.URL) // not reached: srcs holds the repository
}

func atOf(cp *stream.Checkpoint) int64 {
	if cp == nil {
		return 0
	}
	return cp.TargetOff
}

// downloadFrom is Download from one source. fault reports whether the
// error is the source's (what it served), so another source may succeed.
func (c *Client) downloadFrom(ctx context.Context, s streamSource, img ImagePlan, target Target, source io.ReaderAt, o DownloadOptions,
	resume *stream.Checkpoint, onCheckpoint func(stream.Checkpoint) error, st *stream.ApplyStats) (h *stream.Header, fault bool, err error) {
	name := fetch.Redact(s.raw)
	want := stream.Hash(img.Header)
	opts := stream.ApplyOptions{ExpectHeader: &want, MaxStreamSize: img.Size, Progress: o.Progress,
		SkipUnchanged: o.SkipUnchanged, ReadBack: o.ReadBack, OnCheckpoint: onCheckpoint, Stats: st}
	if img.Delta {
		opts.Source = source
	}
	open := func(ctx context.Context, off, end int64) (io.ReadCloser, error) {
		if end < 0 || end > img.Size {
			end = img.Size
		}
		if off > end {
			return nil, fmt.Errorf("client: %s: stream bytes %d-%d are past its %d bytes: %w", name, off, end, img.Size, ErrStreamSize)
		}
		rc, err := s.op.OpenRange(ctx, s.raw, img.Size, off, end)
		if err != nil {
			return nil, &fetchErr{err}
		}
		return struct {
			io.Reader
			io.Closer
		}{taggedReader{io.LimitReader(rc, end-off)}, rc}, nil
	}
	if resume != nil {
		h, err = stream.Resume(ctx, open, target, *resume, opts)
	} else {
		var rc io.ReadCloser
		if rc, err = open(ctx, 0, -1); err == nil {
			h, err = stream.Apply(ctx, rc, target, opts)
			rc.Close()
		}
	}
	if err != nil {
		fault = ctx.Err() == nil && sourceFault(err)
	}
	var fe *fetchErr
	switch {
	case err == nil:
	case errors.Is(err, stream.ErrCheckpoint):
		return h, false, err
	case errors.Is(err, stream.ErrHeaderMismatch):
		return nil, fault, fmt.Errorf("client: %s: %w: %w", name, ErrStreamMismatch, err)
	case errors.Is(err, fetch.ErrSize), errors.Is(err, stream.ErrTooLong):
		return nil, fault, fmt.Errorf("client: %s: %w: %w", name, ErrStreamSize, err)
	case ctx.Err() != nil:
		return nil, false, fmt.Errorf("client: %s: %w", name, err)
	case errors.As(err, &fe):
		return nil, fault, fmt.Errorf("client: %s: %w: %w", name, ErrUnavailable, err)
	case errors.Is(err, stream.ErrTruncated):
		return nil, fault, fmt.Errorf("client: %s: %w: %w", name, ErrStreamSize, err)
	default:
		return nil, fault, fmt.Errorf("client: %s: %w", name, err)
	}
	if h.TargetSize != img.TargetSize || manifest.Hash(h.TargetHash) != img.TargetSHA256 {
		return nil, false, fmt.Errorf("client: %s produced %d bytes %s, the index says %d bytes %s: %w", name, h.TargetSize, h.TargetHash, img.TargetSize, img.TargetSHA256, ErrStreamMismatch)
	}
	return h, false, nil
}

// sourceFault reports whether err comes from what the source served (it
// could not be fetched, or its bytes are not the signed stream's), as
// opposed to the device (the target, the delta's source slot) or the
// signed stream itself, which another source cannot fix.
func sourceFault(err error) bool {
	var fe *fetchErr
	if errors.As(err, &fe) {
		return true
	}
	var oe *stream.OpError
	if errors.As(err, &oe) {
		return oe.Fault == stream.FaultStream
	}
	var fmtErr *stream.FormatError
	if errors.As(err, &fmtErr) {
		return true
	}
	return errors.Is(err, stream.ErrHeaderMismatch) || errors.Is(err, stream.ErrTooLong) || errors.Is(err, stream.ErrTruncated)
}
