// Package bootloaders defines the slot model shared by all bootloader
// backends and the small interface the updater drives them through.
//
// A backend persists the state that the bootloader reads at boot time (a
// U-Boot environment, a GRUB environment block, Android's bootloader_control
// in the misc partition). Every state-changing method is one durable write:
// when it returns nil the new state is on stable storage, and a power cut at
// any point during the call leaves either the old state or the new one in
// force (see each backend's documentation for the limits of its format).
package bootloaders

import (
	"errors"
	"fmt"
)

// DefaultTries is the number of boot attempts SetNext grants when the caller
// does not say.
const DefaultTries = 3

// Slot describes one slot as the bootloader will see it on the next boot.
type Slot struct {
	// Name is the slot's name: "a", "b", "c" or "d".
	Name string `json:"name"`
	// Bootable reports whether the bootloader may still pick this slot.
	Bootable bool `json:"bootable"`
	// Successful reports whether the slot confirmed itself (mark-good);
	// the bootloader no longer counts tries for it.
	Successful bool `json:"successful"`
	// TriesLeft is the number of trial boots left before the bootloader
	// gives up on the slot; meaningful while the slot is not Successful.
	TriesLeft int `json:"tries_left"`
	// Priority orders bootable slots: higher is preferred. Backends with a
	// boot order list report len(order)-index.
	Priority int `json:"priority"`
}

// Status is the state a backend reads back.
type Status struct {
	// Slots lists every slot the backend manages, in name order.
	Slots []Slot `json:"slots"`
	// Next is the slot the bootloader will choose on the next boot, computed
	// with the backend's documented selection rule; empty if none is bootable.
	Next string `json:"next"`
	// TrialFailed reports that the last trial of a new slot ended without
	// mark-good: its tries ran out and the bootloader fell back.
	TrialFailed bool `json:"trial_failed"`
	// FailedSlot names the slot whose trial failed, when TrialFailed.
	FailedSlot string `json:"failed_slot,omitempty"`
	// Scheme names the variable scheme or format in use (e.g. "rauc",
	// "mender", "sysupdate", "aosp").
	Scheme string `json:"scheme"`
}

// Backend is what the updater needs from a bootloader. Implementations are
// not safe for concurrent use; the updater serialises calls.
type Backend interface {
	// Status reads the persisted state.
	Status() (Status, error)
	// SetNext makes the next boot try slot up to tries times (tries <= 0
	// means DefaultTries); when they run out without MarkGood the
	// bootloader falls back to the previous good slot.
	SetNext(slot string, tries int) error
	// MarkGood records that slot booted and works: counting stops and it
	// stays the default.
	MarkGood(slot string) error
	// MarkBad makes slot unbootable from the next boot on.
	MarkBad(slot string) error
}

// ErrUnknownSlot is returned for a slot name the backend does not manage.
var ErrUnknownSlot = errors.New("bootloaders: unknown slot")

// CheckSlot returns an error wrapping ErrUnknownSlot unless name is one of
// names.
func CheckSlot(name string, names []string) error {
	for _, n := range names {
		if n == name {
			return nil
		}
	}
	return fmt.Errorf("%w %q (this backend manages %v)", ErrUnknownSlot, name, names)
}
