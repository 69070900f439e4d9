package updater

import (
	"context"
	"errors"
	"fmt"

	"github.com/sysupdate/sysupdate/bootloaders"
	"github.com/sysupdate/sysupdate/client"
	"github.com/sysupdate/sysupdate/partition"
)

// Status is what `sysupdate status --json` prints (docs/updating.md).
type Status struct {
	Installed  uint64                        `json:"installed"`
	Pending    *client.Pending               `json:"pending,omitempty"`
	Active     string                        `json:"active,omitempty"`
	ActiveHow  string                        `json:"active_how,omitempty"`
	ActiveErr  string                        `json:"active_error,omitempty"`
	NextBoot   string                        `json:"next_boot"`
	Bootloader bootloaders.Status            `json:"bootloader"`
	Slots      []SlotStatus                  `json:"slots"`
	Rollback   *RollbackReport               `json:"rollback,omitempty"`
	Health     *client.HealthReport          `json:"health,omitempty"`
	Checkpoint *CheckpointStatus             `json:"checkpoint,omitempty"`
	StateError string                        `json:"state_error,omitempty"`
	Records    map[string]*client.SlotRecord `json:"-"`
}

// SlotStatus is one slot as the bootloader and the state file see it.
type SlotStatus struct {
	Name string `json:"name"`
	// Devices maps image names to device specs.
	Devices    map[string]string `json:"devices"`
	Booted     bool              `json:"booted"`
	Bootable   bool              `json:"bootable"`
	Successful bool              `json:"successful"`
	TriesLeft  int               `json:"tries_left"`
	Version    uint64            `json:"version,omitempty"`
	Label      string            `json:"label,omitempty"`
	Confirmed  bool              `json:"confirmed"`
}

// CheckpointStatus is an install that stopped and will continue.
type CheckpointStatus struct {
	Version   uint64 `json:"version"`
	Image     string `json:"image"`
	Slot      string `json:"slot"`
	TargetOff int64  `json:"target_offset"`
	StreamOff int64  `json:"stream_offset"`
}

// RollbackReport says that a trial boot failed and the bootloader fell
// back.
type RollbackReport struct {
	// Version is the version that failed, 0 if the state does not know.
	Version    uint64 `json:"version,omitempty"`
	Slot       string `json:"slot"`
	FellBackTo string `json:"fell_back_to,omitempty"`
	Message    string `json:"message"`
}

// Status reads the bootloader, the state file and any checkpoint. It
// takes no lock and changes nothing; a broken state file is reported in
// StateError, not an error.
func (e *Engine) Status(ctx context.Context) (*Status, error) {
	be, err := e.Bootloader()
	if err != nil {
		return nil, err
	}
	st, err := be.Status()
	if err != nil {
		return nil, fmt.Errorf("read bootloader state: %w", err)
	}
	res := &Status{NextBoot: st.Next, Bootloader: st}
	state, err := client.LoadState(e.cfg.State)
	if err != nil {
		res.StateError = err.Error()
		state = &client.State{}
	}
	res.Installed, res.Pending, res.Health, res.Records = state.Installed, state.Pending, state.Health, state.Slots
	if a, how, err := e.Active(); err != nil {
		res.ActiveErr = err.Error()
	} else {
		res.Active, res.ActiveHow = a, how
	}
	for _, name := range e.cfg.SlotNames() {
		ss := SlotStatus{Name: name, Devices: map[string]string{}, Booted: name == res.Active}
		for _, g := range e.cfg.Slots {
			ss.Devices[g.Image] = g.Devices[name]
		}
		if b := slotOf(st, name); b != nil {
			ss.Bootable, ss.Successful, ss.TriesLeft = b.Bootable, b.Successful, b.TriesLeft
		}
		if r := state.Slots[name]; r != nil {
			ss.Version, ss.Label, ss.Confirmed = r.Version, r.Label, r.Confirmed
		} else if name == res.Active && state.Installed != 0 {
			ss.Version, ss.Confirmed = state.Installed, ss.Successful
		}
		res.Slots = append(res.Slots, ss)
	}
	res.Rollback = rollbackReport(st, state.Pending, res.Active)
	if cp, err := e.loadCheckpoint(); err == nil && cp != nil {
		res.Checkpoint = &CheckpointStatus{Version: cp.Version, Image: cp.Image, Slot: cp.Slot, TargetOff: cp.At.TargetOff, StreamOff: cp.At.StreamOff}
	}
	return res, nil
}

// rollbackReport builds the report when the bootloader says a trial
// failed. The pending release is blamed only if the bootloader was
// switched to it: a stale failure flag from an earlier rollback never
// blames a release that was not yet tried.
func rollbackReport(st bootloaders.Status, p *client.Pending, active string) *RollbackReport {
	if !st.TrialFailed {
		return nil
	}
	r := &RollbackReport{Slot: st.FailedSlot, FellBackTo: active}
	if r.FellBackTo == "" {
		r.FellBackTo = st.Next
	}
	if p != nil && p.Slot == st.FailedSlot && p.Switched {
		r.Version = p.Version
		r.Message = fmt.Sprintf("update to version %d in slot %s did not confirm itself and the bootloader fell back to %s", p.Version, p.Slot, r.FellBackTo)
	} else {
		r.Message = fmt.Sprintf("slot %s did not confirm itself and the bootloader fell back to %s", st.FailedSlot, r.FellBackTo)
	}
	return r
}

// RollbackResult says what Rollback switched to.
type RollbackResult struct {
	From, To string
	Version  uint64
	Label    string
	Tries    int
}

// Rollback switches the next boot back to the other slot, by hand, when
// it holds a release that confirmed itself there; otherwise it refuses
// with ErrNoConfirmedOther and changes nothing. The other slot boots on
// trial (the configured tries), so a rollback that does not come up falls
// back here again.
func (e *Engine) Rollback(ctx context.Context) (*RollbackResult, error) {
	unlock, err := e.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	active, _, err := e.Active()
	if err != nil {
		return nil, err
	}
	other, err := partition.Other(active, e.cfg.SlotNames())
	if err != nil {
		return nil, err
	}
	state, err := client.LoadState(e.cfg.State)
	if err != nil {
		return nil, err
	}
	rec := state.Slots[other]
	if rec == nil || !rec.Confirmed {
		why := "this device has no record of it"
		if rec != nil {
			why = fmt.Sprintf("it holds version %d, which never confirmed itself", rec.Version)
		}
		if _, err := e.loadCheckpoint(); err == nil && state.Pending == nil && rec == nil {
			why += " (it may have been partly overwritten by an update)"
		}
		return nil, fmt.Errorf("%w: slot %s: %s; nothing switched", ErrNoConfirmedOther, other, why)
	}
	be, err := e.Bootloader()
	if err != nil {
		return nil, err
	}
	if err := be.SetNext(other, e.cfg.Tries); err != nil {
		if errors.Is(err, bootloaders.ErrUnknownSlot) {
			return nil, err
		}
		return nil, fmt.Errorf("switch the bootloader to slot %s: %w", other, err)
	}
	return &RollbackResult{From: active, To: other, Version: rec.Version, Label: rec.Label, Tries: e.cfg.Tries}, nil
}
