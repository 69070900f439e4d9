// Package config reads the device configuration file,
// /etc/sysupdate/sysupdate.conf by default: one "key = value" per line,
// blank lines and lines starting with '#' ignored.
//
// The format is deliberately small: a value is everything after the first
// '=' with surrounding blanks removed, so it may itself contain '=' and '#'
// (gpt:/data/disk.img#rootfs_a); there are no inline comments, quotes or
// escapes. Unknown keys, repeated keys and malformed slot keys are errors
// naming file:line, so a typo never silently falls back to a default.
// docs/configuration.md documents every key.
package config

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// DefaultPath is where the device commands look when --config is not given.
const DefaultPath = "/etc/sysupdate/sysupdate.conf"

// maxSize bounds a configuration file; a larger one is not a config file.
const maxSize = 1 << 20

// Key describes one plain (non-slot) key.
type Key struct {
	Name string
	Doc  string
}

// Keys lists every plain key the file may hold, in documentation order.
// Slot keys (slot.IMAGE.SLOT) come on top of these.
var Keys = []Key{
	{"repository", "repository root: https://, http://, file:// or a directory"},
	{"channel", "channel to follow (default stable)"},
	{"model", "this device's hardware model"},
	{"master_keys", "armored master public keys baked into the image"},
	{"state", "device state file (default /var/lib/sysupdate/state.json)"},
	{"machine_id", "machine ID file for phased rollouts (default /etc/machine-id)"},
	{"ca_bundle", "extra CA certificates (PEM) for https://"},
	{"floor", "lowest version this device accepts"},
	{"lock", "ignored: every command that changes the slots, the bootloader or the state locks STATE_DIR/sysupdate.lock; remove the line"},
	{"cmdline", "kernel command line file (default /proc/cmdline)"},
	{"tries", "trial boots granted to a new slot, 1..7 (default 3)"},
	{"bootloader", "bootloader backend: grub, uboot or android"},
	{"grubenv", "grub: the grubenv file"},
	{"grub_scheme", "grub: variable scheme, sysupdate or rauc"},
	{"fw_env_config", "uboot: fw_env.config naming the environment"},
	{"uboot_scheme", "uboot: variable scheme, rauc or mender"},
	{"misc", "android: the misc partition"},
	{"slot_suffix", "android: the running slot's suffix (default androidboot.slot_suffix from the kernel command line)"},
	{"health_dir", "health checks run by mark-good, executables in this directory (default /etc/sysupdate/health.d)"},
	{"health_timeout", "how long each health check may run, seconds (default 60)"},
	{"health_failure", "what a failed health check does: stay (unconfirmed; the bootloader falls back once the tries run out), mark-bad (the other slot boots next time), reboot (mark-bad, then reboot now); default stay"},
	{"on_trial", "update while the running slot is still on trial: refuse (default) or confirm (mark it good first, health checks included)"},
	{"min_rate", "slowest acceptable download, bytes per second (default 4096): a file must arrive within 2 minutes plus its size at this rate"},
	{"skip_unchanged", "read the inactive slot before writing and skip what it already holds: true (default: fewer flash writes, faster where reads are cheaper than writes, as on eMMC and SD cards) or false (write every byte: faster where cold reads are slow, as on a loop device over a file)"},
	{"mirrors", "copies of the repository to take streams from, tried in order before the repository itself (and asked for the signed metadata only when it is unavailable): URLs (https://, http://, file://) or absolute directories, separated by spaces"},
}

// Defaults of the typed fields, in one place.
const (
	DefaultChannel       = "stable"
	DefaultMasterKeys    = "/etc/sysupdate/master.pub"
	DefaultState         = "/var/lib/sysupdate/state.json"
	DefaultMachineID     = "/etc/machine-id"
	DefaultCmdline       = "/proc/cmdline"
	DefaultTries         = 3
	DefaultGrubEnv       = "/boot/grub/grubenv"
	DefaultGrubScheme    = "sysupdate"
	DefaultFwEnvConfig   = "/etc/fw_env.config"
	DefaultUBootScheme   = "rauc"
	DefaultMisc          = "/dev/disk/by-partlabel/misc"
	DefaultHealthDir     = "/etc/sysupdate/health.d"
	DefaultHealthTimeout = 60 * time.Second
	DefaultMinRate       = 4096
)

// Health-failure policies (health_failure) and on-trial policies (on_trial).
const (
	HealthStay    = "stay"
	HealthMarkBad = "mark-bad"
	HealthReboot  = "reboot"
	TrialRefuse   = "refuse"
	TrialConfirm  = "confirm"
)

// Bootloaders are the values the bootloader key accepts.
var Bootloaders = []string{"android", "grub", "uboot"}

// SlotNames are the slot names a slot key may use.
var SlotNames = []string{"a", "b", "c", "d"}

// Config is a device configuration: the typed values of a parsed file,
// with Default's values where the file is silent. Commands override fields
// from their flags before handing it to the engine.
type Config struct {
	// Path is the file the configuration came from (for messages).
	Path string
	// Slots are the slot devices, one group per image name, sorted by
	// image name. Every group names the same slots.
	Slots []Group

	Repository  string // repository root URL or directory
	Channel     string
	Model       string
	MasterKeys  string
	State       string // the state file; its directory holds the lock and checkpoints
	MachineID   string
	CABundle    string
	Floor       uint64
	Cmdline     string // kernel command line file
	Tries       int
	Bootloader  string // grub, uboot or android
	GrubEnv     string
	GrubScheme  string
	FwEnvConfig string
	UBootScheme string
	Misc        string
	SlotSuffix  string
	// HealthDir, HealthTimeout and HealthFailure drive mark-good's checks.
	HealthDir     string
	HealthTimeout time.Duration
	HealthFailure string
	// OnTrial says what update does while the running slot is on trial.
	OnTrial string
	// MinRate is the slowest acceptable download in bytes per second.
	MinRate int64
	// Mirrors are roots of copies of the repository (same layout) that
	// update streams are fetched from, in order, before Repository. The
	// signed metadata comes from Repository (from a mirror only when
	// Repository is unavailable, checked the same way), and every stream
	// byte is checked against it, so a mirror needs no trust.
	Mirrors []string
	// SkipUnchanged makes installs read the target slot first and write
	// only what differs (default true).
	SkipUnchanged bool

	values map[string]entry
}

// Default returns the configuration of a device with no file: every
// default, no slots, no repository.
func Default() *Config {
	return &Config{
		Channel: DefaultChannel, MasterKeys: DefaultMasterKeys, State: DefaultState, MachineID: DefaultMachineID,
		Cmdline: DefaultCmdline, Tries: DefaultTries, GrubEnv: DefaultGrubEnv, GrubScheme: DefaultGrubScheme,
		FwEnvConfig: DefaultFwEnvConfig, UBootScheme: DefaultUBootScheme, Misc: DefaultMisc,
		HealthDir: DefaultHealthDir, HealthTimeout: DefaultHealthTimeout, HealthFailure: HealthStay,
		OnTrial: TrialRefuse, MinRate: DefaultMinRate, SkipUnchanged: true, values: map[string]entry{},
	}
}

// Set checks value as the file's line "key = value" would be checked and
// stores it in its typed field: what a command-line flag that overrides a
// key calls, so a flag and the file accept exactly the same values.
func (c *Config) Set(key, value string) error {
	if !isKey(key) {
		return fmt.Errorf("unknown key %q: see docs/configuration.md for the keys", key)
	}
	if err := checkValue(key, value); err != nil {
		return err
	}
	c.set(key, value)
	return nil
}

// set stores a checked plain value in its typed field.
func (c *Config) set(k, v string) {
	switch k {
	case "repository":
		c.Repository = v
	case "channel":
		c.Channel = v
	case "model":
		c.Model = v
	case "master_keys":
		c.MasterKeys = v
	case "state":
		c.State = v
	case "machine_id":
		c.MachineID = v
	case "ca_bundle":
		c.CABundle = v
	case "floor":
		c.Floor, _ = strconv.ParseUint(v, 10, 64)
	case "cmdline":
		c.Cmdline = v
	case "tries":
		c.Tries, _ = strconv.Atoi(v)
	case "bootloader":
		c.Bootloader = v
	case "grubenv":
		c.GrubEnv = v
	case "grub_scheme":
		c.GrubScheme = v
	case "fw_env_config":
		c.FwEnvConfig = v
	case "uboot_scheme":
		c.UBootScheme = v
	case "misc":
		c.Misc = v
	case "slot_suffix":
		c.SlotSuffix = v
	case "health_dir":
		c.HealthDir = v
	case "health_timeout":
		n, _ := strconv.Atoi(v)
		c.HealthTimeout = time.Duration(n) * time.Second
	case "health_failure":
		c.HealthFailure = v
	case "on_trial":
		c.OnTrial = v
	case "min_rate":
		c.MinRate, _ = strconv.ParseInt(v, 10, 64)
	case "mirrors":
		c.Mirrors = strings.Fields(v)
	case "skip_unchanged":
		c.SkipUnchanged = v == "true"
	}
}

// Group is the set of slot devices of one image (e.g. rootfs).
type Group struct {
	// Image is the image name, as the release's image names it.
	Image string
	// Devices maps a slot name ("a") to its device spec (see package
	// partition: a path, PARTUUID=, PARTLABEL= or gpt:FILE#LABEL).
	Devices map[string]string
}

type entry struct {
	value string
	line  int
}

// Error is a problem at one line of a configuration file.
type Error struct {
	Path string // file name
	Line int    // 1-based line number; 0 for the whole file
	Msg  string // what is wrong and what to do
}

func (e *Error) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.Path, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", e.Path, e.Line, e.Msg)
}

// Load reads and parses the file at path. A missing file is an error
// wrapping fs.ErrNotExist, so callers can tell "no config" from a bad one
// (and fall back to Default when no file is required).
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	return Parse(path, f)
}

// Parse reads a configuration from r; name is used in errors.
func Parse(name string, r io.Reader) (*Config, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: read %s: %w", name, err)
	}
	if len(b) > maxSize {
		return nil, &Error{name, 0, fmt.Sprintf("more than %d bytes: not a configuration file", maxSize)}
	}
	c := Default()
	c.Path = name
	groups := map[string]map[string]string{}
	groupLine := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), maxSize)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(strings.TrimSuffix(sc.Text(), "\r"))
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok {
			return nil, &Error{name, n, fmt.Sprintf("%q is not \"key = value\": add the '=' or start the line with '#' to comment it out", line)}
		}
		if k == "" {
			return nil, &Error{name, n, "no key before '='"}
		}
		if strings.ContainsFunc(v, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			return nil, &Error{name, n, fmt.Sprintf("value of %s holds a control character", k)}
		}
		if img, slot, isSlot := strings.Cut(strings.TrimPrefix(k, "slot."), "."); strings.HasPrefix(k, "slot.") {
			if !isSlot || !validImage(img) || !slices.Contains(SlotNames, slot) {
				return nil, &Error{name, n, fmt.Sprintf("bad slot key %q: write slot.IMAGE.SLOT with IMAGE the release's image name ([a-z0-9_-]) and SLOT one of a, b, c, d", k)}
			}
			if v == "" {
				return nil, &Error{name, n, fmt.Sprintf("%s has no device", k)}
			}
			if groups[img] == nil {
				groups[img] = map[string]string{}
				groupLine[img] = n
			}
			if _, dup := groups[img][slot]; dup {
				return nil, &Error{name, n, fmt.Sprintf("%s given twice: keep one", k)}
			}
			groups[img][slot] = v
			continue
		}
		if !isKey(k) {
			return nil, &Error{name, n, fmt.Sprintf("unknown key %q: see docs/configuration.md for the keys", k)}
		}
		if prev, dup := c.values[k]; dup {
			return nil, &Error{name, n, fmt.Sprintf("%s given twice (first at line %d): keep one", k, prev.line)}
		}
		if err := checkValue(k, v); err != nil {
			return nil, &Error{name, n, err.Error()}
		}
		c.values[k] = entry{v, n}
		c.set(k, v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("config: read %s: %w", name, err)
	}
	imgs := make([]string, 0, len(groups))
	for img := range groups {
		imgs = append(imgs, img)
	}
	sort.Strings(imgs)
	for _, img := range imgs {
		g := Group{Image: img, Devices: groups[img]}
		if len(g.Devices) < 2 {
			return nil, &Error{name, groupLine[img], fmt.Sprintf("image %s has only slot %s: an A/B update needs at least two slots (slot.%s.a and slot.%s.b)", img, strings.Join(g.SlotNames(), ""), img, img)}
		}
		if len(c.Slots) > 0 && !slices.Equal(c.Slots[0].SlotNames(), g.SlotNames()) {
			return nil, &Error{name, groupLine[img], fmt.Sprintf("image %s has slots %v but image %s has %v: every image needs a device in every slot", img, g.SlotNames(), c.Slots[0].Image, c.Slots[0].SlotNames())}
		}
		c.Slots = append(c.Slots, g)
	}
	return c, nil
}

func checkValue(k, v string) error {
	switch k {
	case "bootloader":
		if !slices.Contains(Bootloaders, v) {
			return fmt.Errorf("bootloader %q: use one of %s", v, strings.Join(Bootloaders, ", "))
		}
	case "tries":
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 7 {
			return fmt.Errorf("tries %q: give a number of trial boots from 1 to 7", v)
		}
	case "floor":
		if _, err := strconv.ParseUint(v, 10, 64); err != nil {
			return fmt.Errorf("floor %q: give a version number (a non-negative integer)", v)
		}
	case "health_timeout":
		if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 3600 {
			return fmt.Errorf("health_timeout %q: give seconds from 1 to 3600", v)
		}
	case "health_failure":
		if v != HealthStay && v != HealthMarkBad && v != HealthReboot {
			return fmt.Errorf("health_failure %q: use stay, mark-bad or reboot", v)
		}
	case "on_trial":
		if v != TrialRefuse && v != TrialConfirm {
			return fmt.Errorf("on_trial %q: use refuse or confirm", v)
		}
	case "min_rate":
		if n, err := strconv.ParseInt(v, 10, 64); err != nil || n < 1 {
			return fmt.Errorf("min_rate %q: give bytes per second, at least 1", v)
		}
	case "mirrors":
		return checkMirrors(v)
	case "skip_unchanged":
		if v != "true" && v != "false" {
			return fmt.Errorf("skip_unchanged %q: use true or false", v)
		}
	case "grub_scheme":
		if v != "sysupdate" && v != "rauc" {
			return fmt.Errorf("grub_scheme %q: use sysupdate or rauc", v)
		}
	case "uboot_scheme":
		if v != "rauc" && v != "mender" {
			return fmt.Errorf("uboot_scheme %q: use rauc or mender", v)
		}
	}
	return nil
}

// maxMirrors bounds the mirrors key: each one a device tries costs a
// request per stream.
const maxMirrors = 16

// checkMirrors checks a mirrors value: blank-separated https://, http://
// or file:// URLs, or absolute directories.
func checkMirrors(v string) error {
	ms := strings.Fields(v)
	if len(ms) > maxMirrors {
		return fmt.Errorf("mirrors: %d given, at most %d", len(ms), maxMirrors)
	}
	for _, m := range ms {
		if !strings.Contains(m, "://") {
			if !strings.HasPrefix(m, "/") {
				return fmt.Errorf("mirror %q: give an https://, http:// or file:// URL or an absolute directory", m)
			}
			continue
		}
		u, err := url.Parse(m)
		if err != nil {
			return fmt.Errorf("mirror %q: %v", m, err)
		}
		switch {
		case u.Scheme == "file" && (u.Host == "" || u.Host == "localhost") && u.Path != "":
		case (u.Scheme == "http" || u.Scheme == "https") && u.Host != "":
		default:
			return fmt.Errorf("mirror %s: give an https://, http:// or file:// URL (with a host for http, a path for file) or an absolute directory", u.Redacted())
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("mirror %s: a mirror is the root of a copy of the repository; drop the query or fragment", u.Redacted())
		}
	}
	return nil
}

func isKey(k string) bool {
	for _, key := range Keys {
		if key.Name == k {
			return true
		}
	}
	return false
}

func validImage(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// Get returns the value of a plain key and whether the file sets it.
func (c *Config) Get(key string) (string, bool) {
	e, ok := c.values[key]
	return e.value, ok
}

// Line returns the line that sets key, 0 if none; for messages.
func (c *Config) Line(key string) int {
	return c.values[key].line
}

// Group returns the slot group of an image, or nil.
func (c *Config) Group(image string) *Group {
	for i := range c.Slots {
		if c.Slots[i].Image == image {
			return &c.Slots[i]
		}
	}
	return nil
}

// SlotNames returns the configured slot names in order ("a", "b"), nil
// when the file configures no slots.
func (c *Config) SlotNames() []string {
	if len(c.Slots) == 0 {
		return nil
	}
	return c.Slots[0].SlotNames()
}

// SlotNames returns the group's slot names in order.
func (g *Group) SlotNames() []string {
	names := make([]string, 0, len(g.Devices))
	for s := range g.Devices {
		names = append(names, s)
	}
	sort.Strings(names)
	return names
}

// ErrNoSlots is returned by RequireSlots when the file names no slot
// devices.
var ErrNoSlots = errors.New("config: no slot devices configured")

// RequireSlots returns an error wrapping ErrNoSlots unless the file
// configures at least one image's slots.
func (c *Config) RequireSlots() error {
	if len(c.Slots) == 0 {
		return fmt.Errorf("%w in %s: add slot.IMAGE.a = DEVICE and slot.IMAGE.b = DEVICE lines (docs/configuration.md)", ErrNoSlots, c.Path)
	}
	return nil
}
