package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/sysupdate/sysupdate/atomicfile"
)

// State is what a device remembers between checks, so that a repository
// cannot move it backwards: the newest metadata it has accepted and the
// version it runs.
type State struct {
	// Schema is 1.
	Schema int `json:"schema"`
	// Installed is the version in the active slot (0: unknown).
	// mark-good sets it from Pending once the new slot confirmed itself.
	Installed uint64 `json:"installed,omitempty"`
	// Pending is the update written to another slot and switched to,
	// waiting for that slot to boot and confirm itself (mark-good); nil
	// when none is.
	Pending *Pending `json:"pending,omitempty"`
	// Indexes maps a channel to the Generated time of the newest index
	// accepted from it; an older one is a replay.
	Indexes map[string]time.Time `json:"indexes,omitempty"`
	// Keyring and Revocations are the Created times of the newest signing
	// keyring and revocation list accepted.
	Keyring     time.Time `json:"keyring,omitzero"`
	Revocations time.Time `json:"revocations,omitzero"`
	// Revoked are fingerprints seen on any accepted revocation list: once
	// revoked, always revoked, even if a later list were to omit them.
	Revoked []string `json:"revoked,omitempty"`
	// Slots records what each slot holds, as far as this device knows:
	// the release written there and whether it confirmed itself. A slot
	// being rewritten has no record.
	Slots map[string]*SlotRecord `json:"slots,omitempty"`
	// Health is the last failed health check, nil once a slot confirmed.
	Health *HealthReport `json:"health,omitempty"`
}

// SlotRecord is the release in one slot.
type SlotRecord struct {
	Version uint64 `json:"version"`
	Label   string `json:"label,omitempty"`
	// Confirmed: the slot booted this release and passed mark-good.
	Confirmed bool `json:"confirmed"`
	// Written is when the release was written (or first seen confirmed).
	Written time.Time `json:"written,omitzero"`
}

// HealthReport names a failed health check.
type HealthReport struct {
	Slot    string    `json:"slot"`
	Version uint64    `json:"version,omitempty"`
	Check   string    `json:"check"`
	Output  string    `json:"output"` // its last lines
	Error   string    `json:"error"`
	Time    time.Time `json:"time"`
	Action  string    `json:"action"` // what was done: stay, mark-bad, reboot
}

// Pending records an installed but unconfirmed update.
type Pending struct {
	// Version and Label are the release written.
	Version uint64 `json:"version"`
	Label   string `json:"label,omitempty"`
	// Slot is the slot it was written to and the bootloader set to try.
	Slot string `json:"slot"`
	// From is the slot that ran when it was written (the fallback).
	From string `json:"from"`
	// Switched: the bootloader was set to try Slot. A pending record
	// without it is a verified slot never switched to (a cut or a staged
	// install), which no rollback report may blame.
	Switched bool `json:"switched,omitempty"`
}

// maxState bounds the state file.
const maxState = 1 << 20

// LoadState reads the state file. A missing file is a fresh device (the
// zero State). A corrupt file is an error, not a reset: silently forgetting
// the accepted timestamps would re-open replay attacks; the message says
// how to reset deliberately.
func LoadState(path string) (*State, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &State{Schema: 1}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("client: state: %w", err)
	}
	s, err := ParseState(b)
	if err != nil {
		return nil, fmt.Errorf("client: state %s: %w (delete it to reset replay protection deliberately)", path, err)
	}
	return s, nil
}

// ParseState decodes a state file.
func ParseState(b []byte) (*State, error) {
	if len(b) > maxState {
		return nil, fmt.Errorf("%d bytes, more than %d", len(b), maxState)
	}
	var s State
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data at offset %d", dec.InputOffset())
	}
	if s.Schema != 1 {
		return nil, fmt.Errorf("schema %d, want 1", s.Schema)
	}
	return &s, nil
}

// Save writes the state atomically (temporary file, fsync, rename, fsync
// of the directory): after a crash the file holds the old or the new
// state, never a mix.
func (s *State) Save(path string) error {
	s.Schema = 1
	sort.Strings(s.Revoked)
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("client: save state: %w", err)
	}
	return nil
}

func (s *State) isRevoked(fp string) bool {
	for _, r := range s.Revoked {
		if r == fp {
			return true
		}
	}
	return false
}
