package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/sysupdate/sysupdate/bootloaders"
	"github.com/sysupdate/sysupdate/client"
	"github.com/sysupdate/sysupdate/config"
	"github.com/sysupdate/sysupdate/fetch"
	"github.com/sysupdate/sysupdate/partition"
	"github.com/sysupdate/sysupdate/stream"
)

func init() {
	register("update", "check, write the inactive slot, verify it, and switch the bootloader to it", runUpdate)
}

// rebootCommand is run after a successful update unless --no-reboot.
var rebootCommand = []string{"reboot"}

// mountinfo is where the mount check looks; tests may point it elsewhere.
var mountinfo = "/proc/self/mountinfo"

// deviceFlags are the flags every device command shares: --config, the
// running slot override and the bootloader backend's flags.
type deviceFlags struct {
	conf *string
	slot *string
	bf   *backendFlags
}

func addDeviceFlags(fs *flag.FlagSet) *deviceFlags {
	return &deviceFlags{
		conf: addConfigFlag(fs),
		slot: fs.String("slot", "", "the running slot (a, b); default: from the kernel command line or the device of /. For recovery mode, where no slot runs, name the one to keep"),
		bf:   addBackendFlags(fs),
	}
}

// load applies the configuration file, which must exist and name slots.
func (d *deviceFlags) load(fs *flag.FlagSet) (*config.Config, error) {
	cfg, err := applyConfig(fs, *d.conf, true)
	if err != nil {
		return nil, err
	}
	if err := cfg.RequireSlots(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// active returns the running slot and how it was found.
func (d *deviceFlags) active(fs *flag.FlagSet, cfg *config.Config) (string, string, error) {
	names := cfg.SlotNames()
	if *d.slot != "" {
		if !slices.Contains(names, *d.slot) {
			return "", "", usageError("--slot %s: the configuration has slots %s", *d.slot, strings.Join(names, ", "))
		}
		return *d.slot, "--slot", nil
	}
	cmdline := fs.Lookup("cmdline").Value.String()
	// The root file system decides; prefer the image called rootfs.
	groups := slices.Clone(cfg.Slots)
	slices.SortStableFunc(groups, func(a, b config.Group) int {
		return boolInt(b.Image == "rootfs") - boolInt(a.Image == "rootfs")
	})
	var err error
	for _, g := range groups {
		var s, how string
		s, how, err = partition.Active(cmdline, g.Devices, "/")
		if err == nil {
			return s, how, nil
		}
		if !errors.Is(err, partition.ErrUnknownActive) {
			return "", "", err
		}
	}
	return "", "", err
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// clientFlags are the flags that fill a client.Config.
type clientFlags struct {
	cfg      client.Config
	caBundle *string
}

func addClientFlags(fs *flag.FlagSet) *clientFlags {
	c := &clientFlags{}
	fs.StringVar(&c.cfg.RepoURL, "repo", "", "repository: https://, http://, file:// or a directory")
	fs.StringVar(&c.cfg.Channel, "channel", "stable", "channel to follow")
	fs.StringVar(&c.cfg.Model, "model", "", "this device's hardware model")
	fs.StringVar(&c.cfg.MasterKeys, "master-keys", "/etc/sysupdate/master.pub", "master public keys baked into the image")
	fs.StringVar(&c.cfg.StatePath, "state", "/var/lib/sysupdate/state.json", "device state file")
	fs.StringVar(&c.cfg.MachineIDPath, "machine-id", "/etc/machine-id", "machine ID file (phased rollouts)")
	fs.Uint64Var(&c.cfg.Floor, "floor", 0, "lowest version to accept")
	c.caBundle = fs.String("ca-bundle", "", "extra CA certificates (PEM) for https://")
	return c
}

func (c *clientFlags) client() (*client.Client, error) {
	if c.cfg.RepoURL == "" || c.cfg.Model == "" {
		return nil, usageError("no repository or model: set repository and model in the configuration file, or pass --repo and --model")
	}
	op, err := fetch.New(fetch.Options{CABundle: *c.caBundle, UserAgent: userAgent(c.cfg)})
	if err != nil {
		return nil, err
	}
	return client.New(c.cfg, op)
}

// userAgent is what the device tells the server: sysupdate's version, the
// model, the channel and the installed build (from the state file; empty
// when unknown), so a publisher's logs show its fleet.
func userAgent(cfg client.Config) string {
	build := ""
	installed := cfg.Installed
	if installed == 0 {
		if st, err := client.LoadState(cfg.StatePath); err == nil {
			installed = st.Installed
		}
	}
	if installed != 0 {
		build = strconv.FormatUint(installed, 10)
	}
	return fetch.UserAgent(version, cfg.Model, cfg.Channel, build)
}

// updateResult is what update prints with --json (docs/updating.md).
type updateResult struct {
	Active    string        `json:"active"`
	ActiveHow string        `json:"active_how"`
	Target    string        `json:"target,omitempty"`
	Installed uint64        `json:"installed"`
	Version   uint64        `json:"version,omitempty"`
	Label     string        `json:"label,omitempty"`
	UpToDate  bool          `json:"up_to_date"`
	CheckOnly bool          `json:"check_only,omitempty"`
	Images    []imageResult `json:"images,omitempty"`
	Switched  bool          `json:"switched"`
	NextBoot  string        `json:"next_boot,omitempty"`
	Tries     int           `json:"tries,omitempty"`
	Rebooting bool          `json:"rebooting,omitempty"`
	Error     string        `json:"error,omitempty"`
	Refusal   string        `json:"refusal,omitempty"`
}

type imageResult struct {
	Name     string `json:"name"`
	Device   string `json:"device"`
	Stream   string `json:"stream"` // "delta" or "full"
	From     uint64 `json:"from,omitempty"`
	FellBack bool   `json:"fell_back,omitempty"`
	Bytes    int64  `json:"bytes"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"`
	Verified bool   `json:"verified"`
}

const updateSynopsis = "[--config FILE] [--slot S] [--check-only] [--allow-downgrade] [--version V] [--json] [--no-reboot]"

func runUpdate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("update", updateSynopsis, stderr)
	df := addDeviceFlags(fs)
	cf := addClientFlags(fs)
	fs.BoolVar(&cf.cfg.AllowDowngrade, "allow-downgrade", false, "accept an older release or one below the floor")
	fs.Uint64Var(&cf.cfg.Version, "version", 0, "install this version instead of the newest")
	checkOnly := fs.Bool("check-only", false, "say what would be installed and stop")
	noReboot := fs.Bool("no-reboot", false, "do not reboot after switching")
	asJSON := fs.Bool("json", false, "print the outcome as JSON on stdout")
	lockPath := fs.String("lock", "/run/sysupdate.lock", "lock file that keeps two updates from running at once")
	tries := fs.Int("tries", bootloaders.DefaultTries, "trial boots granted to the new slot")
	applyMemorySettings()
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageError("update takes no arguments")
	}
	cfg, err := df.load(fs)
	if err != nil {
		return err
	}
	if *tries < 1 || *tries > 7 {
		return usageError("--tries must be between 1 and 7, got %d", *tries)
	}
	u := &updater{ctx: ctx, stdout: stdout, stderr: stderr, cfg: cfg, tries: *tries, tty: isTerminal(stderr)}
	if *asJSON {
		u.log = stderr
	} else {
		u.log = stdout
	}
	res, err := u.run(df, cf, fs, *lockPath, *checkOnly)
	if err == nil && res.Switched && !*noReboot {
		res.Rebooting = true
	}
	if *asJSON {
		if err != nil {
			res.Error, res.Refusal = err.Error(), refusalCode(err)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(res); jerr != nil && err == nil {
			err = jerr
		}
	}
	if err != nil {
		return err
	}
	if res.Rebooting {
		fmt.Fprintf(u.log, "rebooting into slot %s\n", res.Target)
		cmd := exec.CommandContext(ctx, rebootCommand[0], rebootCommand[1:]...)
		cmd.Stdout, cmd.Stderr = stderr, stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("the update is installed and slot %s is next, but %s failed: %w; reboot by hand", res.Target, strings.Join(rebootCommand, " "), err)
		}
	}
	return nil
}

type updater struct {
	ctx            context.Context
	stdout, stderr io.Writer
	log            io.Writer // human messages: stdout, or stderr under --json
	cfg            *config.Config
	tries          int
	tty            bool
}

// slotPair is one image's target (written) and source (read) devices.
type slotPair struct {
	img    client.ImagePlan
	target *partition.Device
	source *partition.Device
}

func (u *updater) run(df *deviceFlags, cf *clientFlags, fs *flag.FlagSet, lockPath string, checkOnly bool) (*updateResult, error) {
	res := &updateResult{}
	unlock, err := lockFile(lockPath)
	if err != nil {
		return res, err
	}
	defer unlock()

	active, how, err := df.active(fs, u.cfg)
	if err != nil {
		return res, err
	}
	res.Active, res.ActiveHow = active, how
	target, err := partition.Other(active, u.cfg.SlotNames())
	if err != nil {
		return res, err
	}
	res.Target = target
	be, err := df.bf.open()
	if err != nil {
		return res, err
	}
	st, err := be.Status()
	if err != nil {
		return res, fmt.Errorf("read bootloader state: %w", err)
	}
	nothing := fmt.Sprintf("nothing switched: the next boot is still slot %s", orNone(st.Next))

	c, err := cf.client()
	if err != nil {
		return res, err
	}
	plan, err := c.Check(u.ctx)
	if plan != nil {
		res.Installed = plan.Installed
	}
	if err != nil {
		return res, fmt.Errorf("refusing: %w; %s", err, nothing)
	}
	fmt.Fprintf(u.log, "running slot %s (%s), installed version %d\n", active, how, plan.Installed)
	if plan.Release == nil {
		res.UpToDate = true
		fmt.Fprintf(u.log, "up to date; %s\n", nothing)
		return res, nil
	}
	res.Version, res.Label = plan.Release.Version, plan.Release.Label
	fmt.Fprintf(u.log, "update available: version %d %s\n", plan.Release.Version, plan.Release.Label)
	if checkOnly {
		res.CheckOnly = true
		for _, img := range plan.Images {
			fmt.Fprintf(u.log, "  %s: %s, %d bytes -> slot %s\n", img.Name, streamKind(img), img.Size, target)
		}
		return res, nil
	}

	// Open every device before writing anything, so that a refusal
	// leaves every slot and the bootloader as they were.
	pairs, err := u.open(plan, active, target)
	defer func() {
		for _, p := range pairs {
			p.target.Close()
			p.source.Close()
		}
	}()
	if err != nil {
		return res, fmt.Errorf("refusing: %w; %s", err, nothing)
	}

	// The target slot is about to hold a partial image: make sure no
	// fallback can boot it until it is verified and switched to.
	if slotBootable(st, target) {
		if err := be.MarkBad(target); err != nil {
			return res, fmt.Errorf("mark slot %s unbootable before writing it: %w; %s", target, err, nothing)
		}
	}
	broken := fmt.Sprintf("slot %s holds a partial image and is not bootable; nothing switched: the next boot is still slot %s", target, active)
	for _, p := range pairs {
		ir, err := u.write(c, p)
		res.Images = append(res.Images, ir)
		if err != nil {
			return res, fmt.Errorf("%s: %w; %s", p.img.Name, err, broken)
		}
	}

	// Record what is pending before the switch: a power cut in between
	// leaves a pending record for a slot that never boots, which status
	// and mark-good recognise, rather than a switched slot nobody knows
	// the version of.
	state, err := client.LoadState(cf.cfg.StatePath)
	if err != nil {
		return res, fmt.Errorf("%w; %s", err, broken)
	}
	state.Pending = &client.Pending{Version: plan.Release.Version, Label: plan.Release.Label, Slot: target, From: active}
	if err := state.Save(cf.cfg.StatePath); err != nil {
		return res, fmt.Errorf("%w; %s", err, broken)
	}
	if err := be.SetNext(target, u.tries); err != nil {
		return res, fmt.Errorf("switch the bootloader to slot %s: %w; the slot holds version %d, verified, but the bootloader state is unknown: run 'sysupdate status'", target, err, plan.Release.Version)
	}
	st, err = be.Status()
	if err != nil {
		return res, fmt.Errorf("read bootloader state after the switch: %w", err)
	}
	res.Switched, res.NextBoot, res.Tries = true, st.Next, u.tries
	fmt.Fprintf(u.log, "switched: next boot is slot %s (%d trial boots); after it boots, run 'sysupdate mark-good' or the bootloader falls back to slot %s\n", st.Next, u.tries, active)
	return res, nil
}

// open opens the target slot of every image for writing and the active
// one for reading, refusing a target that is the running system.
func (u *updater) open(plan *client.Plan, active, target string) ([]slotPair, error) {
	var pairs []slotPair
	for _, img := range plan.Images {
		g := u.cfg.Group(img.Name)
		if g == nil {
			return pairs, fmt.Errorf("the release has an image %q but %s has no slot.%s.* devices: add them", img.Name, u.cfg.Path, img.Name)
		}
		tspec, aspec := g.Devices[target], g.Devices[active]
		if err := notMounted(tspec); err != nil {
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
			return pairs, fmt.Errorf("slot %s's %s (%s) and the running slot %s's (%s) are the same bytes of %s: fix %s", target, img.Name, tspec, active, aspec, t.Path(), u.cfg.Path)
		}
		if img.TargetSize > t.Size() {
			return pairs, fmt.Errorf("%s version %d is %d bytes but slot %s (%s) holds only %d", img.Name, plan.Release.Version, img.TargetSize, target, tspec, t.Size())
		}
	}
	return pairs, nil
}

// notMounted refuses a block device that is mounted.
func notMounted(spec string) error {
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

func slotBootable(st bootloaders.Status, name string) bool {
	for _, s := range st.Slots {
		if s.Name == name {
			return s.Bootable
		}
	}
	return false
}

func streamKind(img client.ImagePlan) string {
	if img.Delta {
		return "delta from version " + strconv.FormatUint(img.From, 10)
	}
	return "full image"
}

// write downloads one image into its target slot, falling back from a
// delta to the full image when the running slot is not the delta's
// source, then re-reads the slot from the medium.
func (u *updater) write(c *client.Client, p slotPair) (imageResult, error) {
	img := p.img
	ir := imageResult{Name: img.Name, Device: p.target.Name(), Stream: "full", Size: img.TargetSize, SHA256: img.TargetSHA256.String()}
	if img.Delta {
		ir.Stream, ir.From = "delta", img.From
	}
	fmt.Fprintf(u.log, "%s: writing %s (%d bytes) into %s\n", img.Name, streamKind(img), img.Size, p.target.Name())
	h, err := c.Download(u.ctx, img, p.target, p.source, u.progress(img.Name))
	ir.Bytes = img.Size
	if err != nil && img.Delta && errors.Is(err, stream.ErrSourceMismatch) {
		fmt.Fprintf(u.log, "%s: the running slot is not the image the delta was made from (%v); falling back to the full image (%d bytes)\n", img.Name, err, img.FullSize)
		full := img
		full.Delta, full.From, full.SourceSize, full.SourceSHA256 = false, 0, 0, [32]byte{}
		full.URL, full.Size, full.Header = img.FullURL, img.FullSize, img.FullHeader
		ir.Stream, ir.From, ir.FellBack, ir.Bytes = "full", 0, true, img.Size+img.FullSize
		h, err = c.Download(u.ctx, full, p.target, nil, u.progress(img.Name))
	}
	if err != nil {
		return ir, err
	}
	if err := p.target.DropCache(); err != nil {
		return ir, err
	}
	if err := stream.Verify(u.ctx, p.target, h); err != nil {
		return ir, fmt.Errorf("read-back of %s: %w", p.target.Name(), err)
	}
	ir.Verified = true
	fmt.Fprintf(u.log, "%s: written and re-read from %s: sha256 %s\n", img.Name, p.target.Name(), h.TargetHash)
	return ir, nil
}

// progress reports to stderr: one line per 10 % when stderr is not a
// terminal (journald, serial consoles), a line rewritten in place when
// it is.
func (u *updater) progress(name string) func(done, total int64) {
	last := -1
	return func(done, total int64) {
		if total <= 0 {
			return
		}
		pct := int(done * 100 / total)
		if pct/10 == last/10 && !(u.tty && pct != last) {
			return
		}
		last = pct
		if u.tty {
			fmt.Fprintf(u.stderr, "\r%s: %3d%% %d/%d bytes", name, pct, done, total)
			if done == total {
				fmt.Fprintln(u.stderr)
			}
			return
		}
		fmt.Fprintf(u.stderr, "%s: %d%% %d/%d bytes\n", name, pct/10*10, done, total)
	}
}
