package updater

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sysupdate/sysupdate/atomicfile"
	"github.com/sysupdate/sysupdate/bootloaders"
	"github.com/sysupdate/sysupdate/client"
	"github.com/sysupdate/sysupdate/config"
	"github.com/sysupdate/sysupdate/partition"
	"github.com/sysupdate/sysupdate/stream"
)

// Request says what Install installs.
type Request struct {
	// Source is "" (the configured repository), a repository directory (a
	// USB stick), a file://, http:// or https:// URL, or a bundle file.
	Source string
	// Version, when non-zero, asks for that version instead of the newest.
	Version uint64
	// AllowDowngrade accepts an older release or one below the floor.
	AllowDowngrade bool
	// CheckOnly stops after the check and the plan.
	CheckOnly bool
	// NoSwitch writes and verifies the slot but leaves the bootloader
	// alone (a staged install); Activate switches later.
	NoSwitch bool
	// Tries are the trial boots granted; 0 means the configuration's.
	Tries int
	// Installed, for Check only, is the version to check against; 0 means
	// the state file's.
	Installed uint64
}

// Result is the outcome of Install; its JSON form is `update --json`'s.
type Result struct {
	Active    string        `json:"active"`
	ActiveHow string        `json:"active_how"`
	Target    string        `json:"target,omitempty"`
	Installed uint64        `json:"installed"`
	Version   uint64        `json:"version,omitempty"`
	Label     string        `json:"label,omitempty"`
	UpToDate  bool          `json:"up_to_date"`
	CheckOnly bool          `json:"check_only,omitempty"`
	Images    []ImageResult `json:"images,omitempty"`
	Staged    bool          `json:"staged,omitempty"`
	Switched  bool          `json:"switched"`
	NextBoot  string        `json:"next_boot,omitempty"`
	Tries     int           `json:"tries,omitempty"`
	Plan      *client.Plan  `json:"-"`
}

// ImageResult is one image's part of an install.
type ImageResult struct {
	Name     string `json:"name"`
	Device   string `json:"device"`
	Stream   string `json:"stream"` // "delta" or "full"
	From     uint64 `json:"from,omitempty"`
	FellBack bool   `json:"fell_back,omitempty"`
	// Resumed is the target offset the install continued from (0: from
	// the start).
	Resumed int64 `json:"resumed,omitempty"`
	// Bytes is the stream bytes this run read.
	Bytes int64 `json:"bytes"`
	// Written and Skipped are target bytes written and found in place.
	Written int64 `json:"written"`
	Skipped int64 `json:"skipped"`
	// ReadBack is the target bytes re-read from the medium after writing
	// (the rest were read from it before, found in place).
	ReadBack int64  `json:"read_back"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"`
	// Verified: every byte of the slot was read from the medium and
	// matched the image.
	Verified bool `json:"verified"`
}

// checkpointFile is what checkpoint.json holds: an image install that
// stopped, and where.
type checkpointFile struct {
	Version    uint64            `json:"version"`
	Image      string            `json:"image"`
	Slot       string            `json:"slot"`
	Device     string            `json:"device"`
	Stream     stream.Hash       `json:"stream_header"`
	StreamSize int64             `json:"stream_size"`
	Delta      bool              `json:"delta"`
	At         stream.Checkpoint `json:"at"`
	Saved      time.Time         `json:"saved"`
}

func (e *Engine) checkpointPath() string { return filepath.Join(e.stateDir(), "checkpoint.json") }

func (e *Engine) loadCheckpoint() (*checkpointFile, error) {
	b, err := os.ReadFile(e.checkpointPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var cp checkpointFile
	if len(b) > 1<<20 || json.Unmarshal(b, &cp) != nil {
		return nil, fmt.Errorf("%s is not a checkpoint", e.checkpointPath())
	}
	return &cp, nil
}

func (e *Engine) saveCheckpoint(cp *checkpointFile) error {
	cp.Saved = e.now().UTC()
	b, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(e.checkpointPath(), b, 0o644)
}

func (e *Engine) dropCheckpoint() error {
	if err := os.Remove(e.checkpointPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("updater: remove checkpoint: %w", err)
	}
	return nil
}

// slotPair is one image's target (written) and source (read) devices.
type slotPair struct {
	img    client.ImagePlan
	target *partition.Device
	source *partition.Device
}

// Check verifies the repository (Request.Source, "" for the configured
// one) and says what Install would do; it records accepted metadata in
// the state file under the device lock, and writes nothing else.
func (e *Engine) Check(ctx context.Context, req Request, obs Observer) (*client.Plan, error) {
	unlock, err := e.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	m := &emitter{obs: obs, now: e.now}
	m.phase(PhaseCheck, "", "checking %s", e.sourceName(req.Source))
	c, closeSrc, err := e.client(req.Source, req, obs)
	if err != nil {
		return nil, err
	}
	defer closeSrc()
	return c.Check(ctx)
}

func (e *Engine) sourceName(src string) string {
	if src == "" {
		src = e.cfg.Repository
	}
	return redactSource(src)
}

// Install runs the whole update sequence (see the package comment for
// what is durable after each step), continuing from a checkpoint when an
// earlier run of the same release stopped. It returns what it did, also
// on error (as far as it got).
func (e *Engine) Install(ctx context.Context, req Request, obs Observer) (*Result, error) {
	res := &Result{}
	m := &emitter{obs: obs, now: e.now}
	fail := func(err error) (*Result, error) {
		m.emit(Event{Type: EventError, Err: err.Error()})
		return res, err
	}
	unlock, err := e.lock()
	if err != nil {
		return fail(err)
	}
	defer unlock()
	tries := req.Tries
	if tries == 0 {
		tries = e.cfg.Tries
	}
	if tries < 1 || tries > 7 {
		return fail(fmt.Errorf("updater: tries must be between 1 and 7, got %d", tries))
	}
	active, how, err := e.Active()
	if err != nil {
		return fail(err)
	}
	res.Active, res.ActiveHow = active, how
	target, err := partition.Other(active, e.cfg.SlotNames())
	if err != nil {
		return fail(err)
	}
	res.Target = target
	be, err := e.Bootloader()
	if err != nil {
		return fail(err)
	}
	st, err := be.Status()
	if err != nil {
		return fail(fmt.Errorf("read bootloader state: %w", err))
	}
	nothing := fmt.Sprintf("nothing switched: the next boot is still slot %s", orNone(st.Next))

	// On trial, with the target the last confirmed slot: writing it would
	// leave no known good slot.
	if s, t := slotOf(st, active), slotOf(st, target); s != nil && !s.Successful && t != nil && t.Successful && t.Bootable && e.opts.Slot == "" {
		if e.cfg.OnTrial != config.TrialConfirm {
			return fail(fmt.Errorf("%w: slot %s has not confirmed itself yet, and slot %s is the last confirmed one; run 'sysupdate mark-good' first (or set on_trial = confirm): %s", ErrOnTrial, active, target, nothing))
		}
		m.message("slot %s is on trial; confirming it first (on_trial = confirm)", active)
		if _, err := e.markGood(ctx, be, active, m); err != nil {
			return fail(fmt.Errorf("confirm the running slot before updating: %w; %s", err, nothing))
		}
		if st, err = be.Status(); err != nil {
			return fail(fmt.Errorf("read bootloader state: %w", err))
		}
	}

	m.phase(PhaseCheck, "", "checking %s", e.sourceName(req.Source))
	c, closeSrc, err := e.client(req.Source, req, obs)
	if err != nil {
		return fail(fmt.Errorf("refusing: %w; %s", err, nothing))
	}
	defer closeSrc()
	plan, err := c.Check(ctx)
	res.Plan = plan
	if plan != nil {
		res.Installed = plan.Installed
	}
	if err != nil {
		return fail(fmt.Errorf("refusing: %w; %s", err, nothing))
	}
	if plan.IndexFrom != "" {
		m.message("the repository is unavailable: the index was read from mirror %s (signature and freshness checked as the repository's)", plan.IndexFrom)
	}
	m.message("running slot %s (%s), installed version %d", active, how, plan.Installed)
	if plan.Release == nil {
		res.UpToDate = true
		m.message("up to date; %s", nothing)
		m.emit(Event{Type: EventDone, Percent: 100, Message: "up to date"})
		return res, nil
	}
	res.Version, res.Label = plan.Release.Version, plan.Release.Label
	m.message("update available: version %d %s", plan.Release.Version, plan.Release.Label)
	if req.CheckOnly {
		res.CheckOnly = true
		for _, img := range plan.Images {
			m.message("%s: %s, %d bytes -> slot %s", img.Name, streamKind(img), img.Size, target)
		}
		m.emit(Event{Type: EventDone, Percent: 100, Message: "check only"})
		return res, nil
	}

	m.phase(PhaseOpen, "", "opening slot %s", target)
	pairs, err := e.open(plan, active, target)
	defer func() {
		for _, p := range pairs {
			p.target.Close()
			p.source.Close()
		}
	}()
	if err != nil {
		return fail(fmt.Errorf("refusing: %w; %s", err, nothing))
	}

	// The target becomes unbootable right before its first byte changes,
	// not earlier: a fetch that fails first keeps the fallback.
	prepared := false
	prepare := func() error {
		if prepared {
			return nil
		}
		prepared = true
		if st, err := be.Status(); err == nil && slotBootable(st, target) {
			if err := be.MarkBad(target); err != nil {
				return fmt.Errorf("mark slot %s unbootable before writing it: %w", target, err)
			}
		} else if err != nil {
			return fmt.Errorf("read bootloader state: %w", err)
		}
		return e.updateState(func(s *client.State) {
			delete(s.Slots, target)
			if s.Pending != nil && s.Pending.Slot == target {
				s.Pending = nil
			}
		})
	}
	broken := fmt.Sprintf("slot %s holds a partial image and is not bootable; nothing switched: the next boot is still slot %s; run the update again to continue where it stopped", target, active)
	for i, p := range pairs {
		span := 90 / len(pairs)
		ir, err := e.write(ctx, c, p, plan, target, m, prepare, i*span, span)
		res.Images = append(res.Images, ir)
		if err != nil {
			if !prepared {
				return fail(fmt.Errorf("%s: %w; %s", p.img.Name, err, nothing))
			}
			return fail(fmt.Errorf("%s: %w; %s", p.img.Name, err, broken))
		}
	}
	if !prepared { // every byte was already in place
		if err := prepare(); err != nil {
			return fail(fmt.Errorf("%w; %s", err, nothing))
		}
	}

	// Record pending before the switch (see the package comment).
	m.percent = 92
	m.phase(PhaseRecord, "", "recording version %d as pending in slot %s", plan.Release.Version, target)
	rel := plan.Release
	if err := e.updateState(func(s *client.State) {
		s.Pending = &client.Pending{Version: rel.Version, Label: rel.Label, Slot: target, From: active}
		if s.Slots == nil {
			s.Slots = map[string]*client.SlotRecord{}
		}
		s.Slots[target] = &client.SlotRecord{Version: rel.Version, Label: rel.Label, Written: e.now().UTC()}
	}); err != nil {
		return fail(fmt.Errorf("%w; %s", err, broken))
	}
	if err := e.dropCheckpoint(); err != nil {
		return fail(err)
	}
	if req.NoSwitch {
		res.Staged = true
		m.emit(Event{Type: EventDone, Percent: 100, Message: fmt.Sprintf("version %d is written and verified in slot %s; activate it to boot it", rel.Version, target)})
		return res, nil
	}
	if err := e.switchTo(be, target, tries, m); err != nil {
		return fail(err)
	}
	if st, err = be.Status(); err != nil {
		return fail(fmt.Errorf("read bootloader state after the switch: %w", err))
	}
	res.Switched, res.NextBoot, res.Tries = true, st.Next, tries
	m.emit(Event{Type: EventDone, Percent: 100, Message: fmt.Sprintf("switched: next boot is slot %s (%d trial boots); after it boots, run 'sysupdate mark-good' or the bootloader falls back to slot %s", st.Next, tries, active)})
	return res, nil
}

// switchTo is the one bootloader write that makes a verified slot next,
// then marks the pending record switched.
func (e *Engine) switchTo(be bootloaders.Backend, target string, tries int, m *emitter) error {
	m.percent = 95
	m.phase(PhaseSwitch, "", "switching the bootloader to slot %s", target)
	state, err := client.LoadState(e.cfg.State)
	if err != nil {
		return err
	}
	if state.Pending == nil || state.Pending.Slot != target {
		return fmt.Errorf("updater: no verified release is pending in slot %s: install one first", target)
	}
	if err := be.SetNext(target, tries); err != nil {
		return fmt.Errorf("switch the bootloader to slot %s: %w; the slot holds version %d, verified, but the bootloader state is unknown: run 'sysupdate status'", target, err, state.Pending.Version)
	}
	return e.updateState(func(s *client.State) {
		if s.Pending != nil && s.Pending.Slot == target {
			s.Pending.Switched = true
		}
	})
}

// Activate switches the bootloader to the slot a staged install
// (Request.NoSwitch) wrote and verified.
func (e *Engine) Activate(ctx context.Context, obs Observer) error {
	unlock, err := e.lock()
	if err != nil {
		return err
	}
	defer unlock()
	m := &emitter{obs: obs, now: e.now}
	state, err := client.LoadState(e.cfg.State)
	if err != nil {
		return err
	}
	if state.Pending == nil {
		return fmt.Errorf("updater: nothing is staged: install an update first")
	}
	be, err := e.Bootloader()
	if err != nil {
		return err
	}
	return e.switchTo(be, state.Pending.Slot, e.cfg.Tries, m)
}

// updateState loads, edits and saves the state file (under the lock).
func (e *Engine) updateState(edit func(*client.State)) error {
	s, err := client.LoadState(e.cfg.State)
	if err != nil {
		return err
	}
	edit(s)
	return s.Save(e.cfg.State)
}

// open opens the target slot of every image for writing and the active
// one for reading, refusing a target that is the running system.
func (e *Engine) open(plan *client.Plan, active, target string) ([]slotPair, error) {
	var pairs []slotPair
	for _, img := range plan.Images {
		g := e.cfg.Group(img.Name)
		if g == nil {
			return pairs, fmt.Errorf("the release has an image %q but %s has no slot.%s.* devices: add them", img.Name, e.cfg.Path, img.Name)
		}
		tspec, aspec := g.Devices[target], g.Devices[active]
		if err := notMounted(tspec, e.opts.Mountinfo); err != nil {
			return pairs, err
		}
		t, err := partition.Open(tspec, true)
		if err != nil {
			return pairs, err
		}
		s, err := partition.Open(aspec, false)
		if err != nil {
			t.Close()
			return pairs, err
		}
		pairs = append(pairs, slotPair{img: img, target: t, source: s})
		if sameRange(t, s) {
			return pairs, fmt.Errorf("slot %s's %s (%s) and the running slot %s's (%s) are the same bytes of %s: fix %s", target, img.Name, tspec, active, aspec, t.Path(), e.cfg.Path)
		}
		if img.TargetSize > t.Size() {
			return pairs, fmt.Errorf("%s version %d is %d bytes but slot %s (%s) holds only %d", img.Name, plan.Release.Version, img.TargetSize, target, tspec, t.Size())
		}
	}
	return pairs, nil
}

// write downloads one image into its target slot, resuming from a
// checkpoint of the same stream, falling back from a delta to the full
// image when the running slot is not the delta's source, then re-reads
// the slot from the medium.
func (e *Engine) write(ctx context.Context, c *client.Client, p slotPair, plan *client.Plan, slot string, m *emitter, prepare func() error, base, span int) (ImageResult, error) {
	img := p.img
	ir := ImageResult{Name: img.Name, Device: p.target.Name(), Stream: "full", Size: img.TargetSize, SHA256: img.TargetSHA256.String()}
	if img.Delta {
		ir.Stream, ir.From = "delta", img.From
	}
	m.percent = base
	m.phase(PhaseDownload, img.Name, "%s: writing %s (%d bytes) into %s", img.Name, streamKind(img), img.Size, p.target.Name())
	tgt := &guardedTarget{d: p.target, prepare: prepare}
	h, err := e.download(ctx, c, img, plan, slot, tgt, p.source, m, &ir, base, span)
	if err != nil && img.Delta && errors.Is(err, client.ErrUnavailable) && ir.Written == 0 && ir.Skipped == 0 && ctx.Err() == nil {
		// A bundle carries full streams only; a mirror may have pruned
		// deltas: the full stream is the same release, verified the same.
		m.message("%s: the delta cannot be fetched (%v); installing the full image instead (%d bytes)", img.Name, err, img.FullSize)
		full := img.Full()
		ir.Stream, ir.From, ir.FellBack = "full", 0, true
		h, err = e.download(ctx, c, full, plan, slot, tgt, nil, m, &ir, base, span)
	} else if err != nil && img.Delta && errors.Is(err, stream.ErrVersion) && ir.Written == 0 && ir.Skipped == 0 {
		// A publisher newer than this device wrote the delta in a format
		// it cannot read (format 2's deflate ops, say); full streams stay
		// in the oldest format that holds them.
		m.message("%s: the delta needs a newer sysupdate (%v); installing the full image instead (%d bytes)", img.Name, err, img.FullSize)
		full := img.Full()
		ir.Stream, ir.From, ir.FellBack = "full", 0, true
		h, err = e.download(ctx, c, full, plan, slot, tgt, nil, m, &ir, base, span)
	} else if err != nil && img.Delta && errors.Is(err, stream.ErrSourceMismatch) {
		m.message("%s: the running slot is not the image the delta was made from (%v); falling back to the full image (%d bytes)", img.Name, err, img.FullSize)
		full := img.Full()
		ir.Stream, ir.From, ir.FellBack = "full", 0, true
		h, err = e.download(ctx, c, full, plan, slot, tgt, nil, m, &ir, base, span)
	}
	if err != nil {
		return ir, err
	}
	m.percent = base + span
	// The download read every chunk back from the medium as it went
	// (ReadBack): what it found in place before writing, and what it
	// wrote after syncing it and dropping its cached pages.
	m.phase(PhaseVerify, img.Name, "%s: %s read back from the medium: %d bytes re-read after writing, %d found in place", img.Name, p.target.Name(), ir.ReadBack, ir.Skipped)
	ir.Verified = true
	m.message("%s: written and read back from %s: sha256 %s", img.Name, p.target.Name(), h.TargetHash)
	return ir, nil
}

// download streams img into the target, from the checkpoint when one
// fits.
func (e *Engine) download(ctx context.Context, c *client.Client, img client.ImagePlan, plan *client.Plan, slot string, tgt *guardedTarget, source *partition.Device, m *emitter, ir *ImageResult, base, span int) (*stream.Header, error) {
	hdr := stream.Hash(img.Header)
	var resume *stream.Checkpoint
	cp, err := e.loadCheckpoint()
	switch {
	case err != nil:
		m.message("ignoring the checkpoint: %v; starting %s from the beginning", err, img.Name)
	case cp == nil:
	case cp.Version == plan.Release.Version && cp.Image == img.Name && cp.Slot == slot && cp.Device == tgt.d.Name() && cp.Stream == hdr && cp.StreamSize == img.Size:
		at := cp.At
		resume = &at
		ir.Resumed = at.TargetOff
		// The first run made it unbootable before it wrote; make sure.
		if err := tgt.before(); err != nil {
			return nil, err
		}
		m.emit(Event{Type: EventResume, Image: img.Name, Done: at.TargetOff, Total: img.TargetSize,
			Message: fmt.Sprintf("%s: continuing from a checkpoint: %d of %d bytes written and verified; fetching from stream byte %d", img.Name, at.TargetOff, img.TargetSize, at.StreamOff)})
	default:
		m.message("the checkpoint is for version %d, image %s, slot %s, stream %s; this install is version %d, %s, slot %s, stream %s: starting over",
			cp.Version, cp.Image, cp.Slot, short(cp.Stream), plan.Release.Version, img.Name, slot, short(hdr))
		if err := e.dropCheckpoint(); err != nil {
			return nil, err
		}
	}
	var stats stream.ApplyStats
	mt := &meter{m: m, image: img.Name, base: base, span: span}
	o := client.DownloadOptions{Progress: mt.progress, Resume: resume, SkipUnchanged: e.cfg.SkipUnchanged, ReadBack: true, Stats: &stats, OnSource: mt.sourceEvent,
		OnCheckpoint: func(at stream.Checkpoint) error {
			return e.saveCheckpoint(&checkpointFile{Version: plan.Release.Version, Image: img.Name, Slot: slot, Device: tgt.d.Name(),
				Stream: hdr, StreamSize: img.Size, Delta: img.Delta, At: at})
		}}
	h, err := c.Download(ctx, img, tgt, sourceOrNil(source), o)
	if errors.Is(err, stream.ErrCheckpoint) {
		m.message("%s: %v; starting over", img.Name, err)
		ir.Resumed = 0
		if err := e.dropCheckpoint(); err != nil {
			return nil, err
		}
		o.Resume = nil
		h, err = c.Download(ctx, img, tgt, sourceOrNil(source), o)
	}
	ir.Bytes += stats.StreamRead
	ir.Written += stats.Written
	ir.Skipped += stats.Skipped
	ir.ReadBack += stats.ReadBack
	return h, err
}

func sourceOrNil(d *partition.Device) client.Target {
	if d == nil {
		return nil
	}
	return d
}

// guardedTarget runs prepare (make the slot unbootable) before the first
// write, so nothing is marked bad for a download that never writes.
type guardedTarget struct {
	d       *partition.Device
	prepare func() error
	done    bool
}

func (g *guardedTarget) before() error {
	if g.done {
		return nil
	}
	g.done = true
	return g.prepare()
}

func (g *guardedTarget) ReadAt(p []byte, off int64) (int, error) { return g.d.ReadAt(p, off) }

func (g *guardedTarget) WriteAt(p []byte, off int64) (int, error) {
	if err := g.before(); err != nil {
		return 0, err
	}
	return g.d.WriteAt(p, off)
}

func (g *guardedTarget) ZeroRange(off, n int64) error {
	if err := g.before(); err != nil {
		return err
	}
	return g.d.ZeroRange(off, n)
}

func (g *guardedTarget) Sync() error { return g.d.Sync() }

func (g *guardedTarget) DropRange(off, n int64) error { return g.d.DropRange(off, n) }

func (g *guardedTarget) Prefetch(off, n int64) { g.d.Prefetch(off, n) }

func short(h stream.Hash) string { return h.String()[:12] }

func streamKind(img client.ImagePlan) string {
	if img.Delta {
		return fmt.Sprintf("delta from version %d", img.From)
	}
	return "full image"
}

func slotOf(st bootloaders.Status, name string) *bootloaders.Slot {
	for i := range st.Slots {
		if st.Slots[i].Name == name {
			return &st.Slots[i]
		}
	}
	return nil
}

func slotBootable(st bootloaders.Status, name string) bool {
	s := slotOf(st, name)
	return s != nil && s.Bootable
}

func orNone(s string) string {
	if s == "" {
		return "(none bootable)"
	}
	return s
}

// notMounted refuses a block device that is mounted.
func notMounted(spec, mountinfo string) error {
	path, label, err := partition.Resolve(spec)
	if err != nil || label != "" {
		return err
	}
	at, err := partition.MountedAt(path, mountinfo)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil // partition.Open reports the missing device
		}
		return err
	}
	if at != "" {
		return fmt.Errorf("%s is mounted at %s: it is the running system or in use; unmount it or check the slot configuration", spec, at)
	}
	return nil
}

func sameRange(a, b *partition.Device) bool {
	if a.Path() != b.Path() {
		sa, ea := os.Stat(a.Path())
		sb, eb := os.Stat(b.Path())
		if ea != nil || eb != nil || !os.SameFile(sa, sb) {
			return false
		}
	}
	return a.Offset() < b.Offset()+b.Size() && b.Offset() < a.Offset()+a.Size()
}
