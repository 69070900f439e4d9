package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/sysupdate/sysupdate/bootloaders"
	"github.com/sysupdate/sysupdate/client"
)

func init() {
	register("status", "show the installed version, the running and next slot, and any rollback", runStatus)
}

// statusResult is what status prints with --json (docs/updating.md).
type statusResult struct {
	Installed  uint64             `json:"installed"`
	Pending    *client.Pending    `json:"pending,omitempty"`
	Active     string             `json:"active,omitempty"`
	ActiveHow  string             `json:"active_how,omitempty"`
	ActiveErr  string             `json:"active_error,omitempty"`
	NextBoot   string             `json:"next_boot"`
	Bootloader bootloaders.Status `json:"bootloader"`
	Rollback   *rollbackReport    `json:"rollback,omitempty"`
}

// rollbackReport says that a trial boot failed and the bootloader fell back.
type rollbackReport struct {
	// Version is the version that failed, 0 if the state does not know.
	Version uint64 `json:"version,omitempty"`
	// Slot failed its trial; FellBackTo is the slot that runs instead.
	Slot       string `json:"slot"`
	FellBackTo string `json:"fell_back_to,omitempty"`
	Message    string `json:"message"`
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", "[--config FILE] [--json]", stderr)
	df := addDeviceFlags(fs)
	statePath := fs.String("state", "/var/lib/sysupdate/state.json", "device state file")
	asJSON := fs.Bool("json", false, "print the status as JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageError("status takes no arguments")
	}
	cfg, err := df.load(fs)
	if err != nil {
		return err
	}
	be, err := df.bf.open()
	if err != nil {
		return err
	}
	st, err := be.Status()
	if err != nil {
		return fmt.Errorf("read bootloader state: %w", err)
	}
	state, err := client.LoadState(*statePath)
	if err != nil {
		return err
	}
	res := statusResult{Installed: state.Installed, Pending: state.Pending, NextBoot: st.Next, Bootloader: st}
	if a, how, err := df.active(fs, cfg); err != nil {
		res.ActiveErr = err.Error()
	} else {
		res.Active, res.ActiveHow = a, how
	}
	res.Rollback = rollback(st, state.Pending, res.Active)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(stdout, "installed version: %d\n", res.Installed)
	if res.Active != "" {
		fmt.Fprintf(stdout, "running slot: %s (%s)\n", res.Active, res.ActiveHow)
	} else {
		fmt.Fprintf(stdout, "running slot: unknown (%s)\n", res.ActiveErr)
	}
	if p := res.Pending; p != nil && res.Rollback == nil {
		if p.Slot == res.Active {
			fmt.Fprintf(stdout, "pending: version %d %s is running in slot %s on trial: run 'sysupdate mark-good' to keep it\n", p.Version, p.Label, p.Slot)
		} else {
			fmt.Fprintf(stdout, "pending: version %d %s written to slot %s, waiting for a reboot\n", p.Version, p.Label, p.Slot)
		}
	}
	if r := res.Rollback; r != nil {
		fmt.Fprintf(stdout, "ROLLBACK: %s\n", r.Message)
	}
	return printStatus(stdout, st, false)
}

// rollback builds the report when the bootloader says a trial failed.
func rollback(st bootloaders.Status, p *client.Pending, active string) *rollbackReport {
	if !st.TrialFailed {
		return nil
	}
	r := &rollbackReport{Slot: st.FailedSlot, FellBackTo: active}
	if r.FellBackTo == "" {
		r.FellBackTo = st.Next
	}
	if p != nil && p.Slot == st.FailedSlot {
		r.Version = p.Version
		r.Message = fmt.Sprintf("update to version %d in slot %s did not confirm itself and the bootloader fell back to %s", p.Version, p.Slot, r.FellBackTo)
	} else {
		r.Message = fmt.Sprintf("slot %s did not confirm itself and the bootloader fell back to %s", st.FailedSlot, r.FellBackTo)
	}
	return r
}
