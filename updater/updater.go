// Package updater is sysupdate's device engine: the one sequence that
// checks a repository, writes the inactive slot, reads it back, records
// it and switches the bootloader, and the operations around it (confirm a
// booted slot with health checks, roll back by hand, report status). The
// CLI, the D-Bus daemon and the recovery image all drive it; none of them
// sequences anything itself. Nothing here prints: progress, retries and
// messages go to an Observer as Events.
//
// # Locking
//
// Every operation that changes a slot, the bootloader state or the state
// file takes an exclusive flock on sysupdate.lock in the state file's
// directory (the lock cannot be side-stepped by another path): a second
// operation fails at once with ErrBusy. The kernel drops the lock when the
// process dies. Status only reads.
//
// # Crash-ordering contract of Install
//
// What is durable when each step returns, and what a power cut (or
// SIGKILL) between steps leaves:
//
//  1. Check: the state file's accepted-metadata timestamps (atomic
//     replace). A cut leaves old or new timestamps; slots and bootloader
//     untouched.
//  2. Open every target and source slot and refuse (mounted, overlapping,
//     too small) before anything is written. Nothing durable.
//  3. Before the first byte of a slot is written (not before: a fetch that
//     fails first keeps the fallback): the bootloader marks the target
//     unbootable, then the state file forgets the target's old release.
//     A cut leaves an unbootable target and the running slot next.
//  4. Stream into the target. About every 1/2000 of the stream the target
//     is fdatasync'ed, then a checkpoint (release, image, stream header
//     hash, verified position) replaces checkpoint.json beside the state
//     file. A cut leaves an unbootable partial slot and a checkpoint that
//     never describes data that is not durable; the next Install re-reads
//     the written prefix, checks it against the checkpoint and fetches only
//     the rest (a changed release or stream, or content that does not
//     match, restarts cleanly and says so). The read-back runs alongside
//     (stream.ApplyOptions.ReadBack): the slot's cached pages are dropped
//     before the first read, so bytes found in place (skip_unchanged) are
//     read from the medium; a second goroutine, in batches of up to 64
//     MiB cut at every checkpoint, writes back and drops the pages of what
//     was written, reads the slot back in order and takes the tree hash
//     from what it reads (a checkpoint is recorded once what precedes it
//     has been read back).
//  5. When the stream ends: sync, let the reader finish, and match the
//     tree hash of what it read with the signed one. Every byte of the
//     slot has now been read from the medium. Nothing new durable.
//  6. Record pending = {version, slot} in the state file and remove the
//     checkpoint. A cut leaves a verified slot that the bootloader never
//     switched to; Status says so and the next Install starts over
//     (skipping writes of bytes already in place).
//  7. One bootloader write: SetNext(target, tries). A cut leaves the old or
//     the new bootloader state (see package bootloaders).
//
// A slot is never bootable before its content was read back and verified.
package updater

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sysupdate/sysupdate/bootloaders"
	"github.com/sysupdate/sysupdate/bootloaders/android"
	"github.com/sysupdate/sysupdate/bootloaders/grub"
	"github.com/sysupdate/sysupdate/bootloaders/uboot"
	"github.com/sysupdate/sysupdate/client"
	"github.com/sysupdate/sysupdate/config"
	"github.com/sysupdate/sysupdate/partition"
	"golang.org/x/sys/unix"
)

// Errors callers branch on.
var (
	// ErrBusy: another sysupdate operation holds the device lock.
	ErrBusy = errors.New("updater: another sysupdate operation is running")
	// ErrOnTrial: the running slot is still on trial; updating now would
	// overwrite the last confirmed slot.
	ErrOnTrial = errors.New("updater: the running slot is on trial")
	// ErrNoConfirmedOther: rollback has no confirmed release to go back to.
	ErrNoConfirmedOther = errors.New("updater: the other slot holds no confirmed release")
	// ErrHealth: a health check failed; the slot was not confirmed.
	ErrHealth = errors.New("updater: health check failed")
)

// Options tune an Engine. The zero value is usable.
type Options struct {
	// Version is sysupdate's version, sent in the User-Agent.
	Version string
	// Slot, when set, is the running slot (--slot); recovery mode, where
	// no slot runs, names the one to keep.
	Slot string
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Reboot reboots the device; nil runs "reboot".
	Reboot func(ctx context.Context) error
	// Mountinfo is where mount checks look; "" means /proc/self/mountinfo.
	Mountinfo string
	// Root is the running root file system; "" means "/".
	Root string
}

// Engine drives one device. Its methods are safe to call from several
// goroutines: the device lock serialises the ones that change anything.
type Engine struct {
	cfg     *config.Config
	opts    Options
	cmdline string // raw kernel command line
	booted  string // slot named on it, "" if none
}

// New returns an engine for the device cfg describes. It reads the kernel
// command line (an unreadable one is an error, not an empty line, unless
// Options.Slot names the running slot). Operations on slots fail later if
// the configuration names none; Check needs none.
func New(cfg *config.Config, opts Options) (*Engine, error) {
	if opts.Mountinfo == "" {
		opts.Mountinfo = "/proc/self/mountinfo"
	}
	if opts.Root == "" {
		opts.Root = "/"
	}
	if opts.Slot != "" && !slices.Contains(cfg.SlotNames(), opts.Slot) {
		return nil, fmt.Errorf("updater: --slot %s: the configuration has slots %s", opts.Slot, strings.Join(cfg.SlotNames(), ", "))
	}
	e := &Engine{cfg: cfg, opts: opts}
	if cfg.Cmdline != "" {
		b, err := os.ReadFile(cfg.Cmdline)
		if err != nil && opts.Slot == "" {
			return nil, fmt.Errorf("updater: read the kernel command line %s: %w (set cmdline in %s, or name the running slot with --slot)", cfg.Cmdline, err, cfg.Path)
		}
		e.cmdline = string(b)
		s, err := partition.CmdlineSlot(e.cmdline)
		if err != nil {
			return nil, fmt.Errorf("updater: %s: %w", cfg.Cmdline, err)
		}
		e.booted = s
	}
	return e, nil
}

// Config returns the engine's configuration.
func (e *Engine) Config() *config.Config { return e.cfg }

func (e *Engine) now() time.Time {
	if e.opts.Now != nil {
		return e.opts.Now()
	}
	return time.Now()
}

// stateDir is the directory of the state file: lock and checkpoints.
func (e *Engine) stateDir() string { return filepath.Dir(e.cfg.State) }

// lock takes the device lock or fails with ErrBusy.
func (e *Engine) lock() (unlock func(), err error) {
	dir := e.stateDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("updater: lock: %w", err)
	}
	p := filepath.Join(dir, "sysupdate.lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("updater: lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (it holds %s); wait for it to finish", ErrBusy, p)
		}
		return nil, fmt.Errorf("updater: lock %s: %w", p, err)
	}
	return func() { f.Close() }, nil
}

// Bootloader opens the configured bootloader backend.
func (e *Engine) Bootloader() (bootloaders.Backend, error) {
	return OpenBootloader(e.cfg, e.booted)
}

// OpenBootloader opens the backend cfg names; booted is the running slot
// ("" if unknown), which tells a trial in progress from a failed one.
func OpenBootloader(cfg *config.Config, booted string) (bootloaders.Backend, error) {
	switch cfg.Bootloader {
	case "grub":
		s, err := grub.ParseScheme(cfg.GrubScheme)
		if err != nil {
			return nil, fmt.Errorf("updater: grub_scheme: %w", err)
		}
		return grub.New(grub.Config{Path: cfg.GrubEnv, Scheme: s, Booted: booted})
	case "uboot":
		return uboot.Open(cfg.FwEnvConfig, cfg.UBootScheme)
	case "android":
		suffix := cfg.SlotSuffix
		if suffix == "" && booted != "" {
			suffix = "_" + booted
		}
		return android.New(android.Config{Path: cfg.Misc, SlotSuffix: suffix})
	case "":
		return nil, fmt.Errorf("updater: no bootloader configured: set bootloader = grub, uboot or android in %s", cfg.Path)
	}
	return nil, fmt.Errorf("updater: unknown bootloader %q: use grub, uboot or android", cfg.Bootloader)
}

// Active returns the running slot and how it was found.
func (e *Engine) Active() (slot, how string, err error) {
	if err := e.cfg.RequireSlots(); err != nil {
		return "", "", err
	}
	if e.opts.Slot != "" {
		return e.opts.Slot, "--slot", nil
	}
	if e.booted != "" {
		if !slices.Contains(e.cfg.SlotNames(), e.booted) {
			return "", "", fmt.Errorf("updater: the kernel command line (%s) names slot %s, which %s does not configure", e.cfg.Cmdline, e.booted, e.cfg.Path)
		}
		return e.booted, "kernel command line " + e.cfg.Cmdline, nil
	}
	groups := slices.Clone(e.cfg.Slots)
	sort.SliceStable(groups, func(i, j int) bool { return groups[i].Image == "rootfs" && groups[j].Image != "rootfs" })
	for _, g := range groups {
		s, how, err := partition.Active("", g.Devices, e.opts.Root)
		if err == nil {
			return s, how, nil
		}
		if !errors.Is(err, partition.ErrUnknownActive) {
			return "", "", err
		}
	}
	return "", "", partition.ErrUnknownActive
}

// client returns a repository client for repoURL ("" = configured).
func (e *Engine) client(repoURL string, req Request, obs Observer) (*client.Client, func(), error) {
	src, err := openSource(repoURL, e.cfg, e.opts.Version, req, obs)
	if err != nil {
		return nil, nil, err
	}
	ccfg := client.Config{RepoURL: src.root, Channel: e.cfg.Channel, Model: e.cfg.Model, MasterKeys: e.cfg.MasterKeys,
		StatePath: e.cfg.State, MachineIDPath: e.cfg.MachineID, Floor: e.cfg.Floor, AllowDowngrade: req.AllowDowngrade,
		Version: req.Version, Installed: req.Installed, Now: e.opts.Now, Mirrors: src.mirrors}
	if src.mop != nil {
		ccfg.MirrorOpener = src.mop
	}
	c, err := client.New(ccfg, src.op)
	if err != nil {
		src.close()
		return nil, nil, err
	}
	return c, src.close, nil
}

func (e *Engine) reboot(ctx context.Context) error {
	if e.opts.Reboot != nil {
		return e.opts.Reboot(ctx)
	}
	out, err := exec.CommandContext(ctx, "reboot").CombinedOutput()
	if err != nil {
		return fmt.Errorf("reboot: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
