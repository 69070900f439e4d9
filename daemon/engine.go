package daemon

import (
	"context"
	"errors"
	"time"
)

// Engine is what the daemon needs from the update engine (package updater,
// through an adapter in cmd/sysupdate). Every method may block; the daemon
// runs at most one of Check, Install, Activate, MarkGood, MarkBad and
// SetNext at a time, and cancels ctx on shutdown. Status may run at any
// time and must not take the device lock.
type Engine interface {
	// Check asks the repository what is available. It writes nothing.
	Check(ctx context.Context, obs Observer) (*CheckResult, error)
	// Install fetches, writes and verifies an update into the inactive
	// slot and, unless req.NoSwitch, switches the bootloader to it.
	// Cancelling ctx stops it; the next Install resumes.
	Install(ctx context.Context, req Request, obs Observer) (*InstallResult, error)
	// Activate switches the bootloader to a staged, verified slot.
	Activate(ctx context.Context) error
	// MarkGood runs the health checks, then confirms the running slot.
	MarkGood(ctx context.Context) error
	// MarkBad makes a slot unbootable; SetNext makes it the next boot.
	MarkBad(ctx context.Context, slot string) error
	SetNext(ctx context.Context, slot string) error
	// Status reads the device state and the bootloader.
	Status(ctx context.Context) (*Status, error)
}

// Inspector is implemented by engines that can read a bundle's release
// without installing it (RAUC's Info): the model it is for and its
// release.
type Inspector interface {
	Inspect(ctx context.Context, source string) (model string, rel *Release, err error)
}

// ChannelSetter is implemented by engines that can follow another
// channel (system-image's SetChannel). The change lasts until the daemon
// exits; the daemon persists it in its settings file and sets it again at
// start.
type ChannelSetter interface {
	SetChannel(channel string) error
}

// ErrBusy is returned (wrapped) when an operation is refused because
// another one runs, in this daemon or, through the device lock, in
// another sysupdate process. Engine adapters wrap the engine's own busy
// error with it so that both APIs report it the same way.
var ErrBusy = errors.New("daemon: another operation is running")

// Release is one published version.
type Release struct {
	Version uint64
	Label   string
}

// CheckResult is what Check found.
type CheckResult struct {
	Installed Release
	// Available is nil when the device is up to date.
	Available *Release
	// Size is the number of bytes the update would download.
	Size int64
}

// Request says what Install installs.
type Request struct {
	// Source is "" for the configured repository, or a bundle file, a
	// repository directory or a URL.
	Source string
	// NoSwitch stages the update: written and verified, not switched to.
	NoSwitch bool
}

// InstallResult is what Install did.
type InstallResult struct {
	Release
	// Slot is the slot written (a, b). UpToDate is true when there was
	// nothing to install.
	Slot     string
	UpToDate bool
	Switched bool
}

// Status is the device's state.
type Status struct {
	Installed Release
	// Booted is the running slot ("" when unknown), Next the slot the
	// bootloader boots next ("" when none is bootable).
	Booted, Next string
	// Staged is a verified release written but not switched to.
	Staged *Release
	Slots  []Slot
	// Model and Channel are the device's; Compatible for RAUC is Model.
	Model, Channel string
	// LastUpdate is when the installed release was confirmed, if known.
	LastUpdate time.Time
}

// Slot is one A/B slot.
type Slot struct {
	Name     string // a, b
	Device   string
	Bootable bool
	// Good is true once the slot confirmed itself (mark-good).
	Good bool
	// Release is the release the slot holds, if known.
	Release *Release
}

// Observer receives an operation's events; it must not block.
type Observer func(Event)

// Event is one step of an operation, copied from the engine's events.
type Event struct {
	Type    string // phase, progress, retry, resume, message, done, error
	Phase   string // check, download, write, verify, switch, health, confirm
	Message string
	// Done and Total are bytes, Percent is of the whole operation.
	Done, Total int64
	Percent     int
	ETA         time.Duration
}
