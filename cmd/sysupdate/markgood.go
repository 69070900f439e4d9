package main

import (
	"context"
	"fmt"
	"io"

	"github.com/sysupdate/sysupdate/client"
)

func init() {
	register("mark-good", "confirm that the running slot works: stop the trial countdown and record its version", runMarkGood)
}

func runMarkGood(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("mark-good", "[--config FILE] [--slot S]", stderr)
	df := addDeviceFlags(fs)
	statePath := fs.String("state", "/var/lib/sysupdate/state.json", "device state file")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageError("mark-good takes no arguments; it confirms the running slot (--slot to name it)")
	}
	cfg, err := df.load(fs)
	if err != nil {
		return err
	}
	active, how, err := df.active(fs, cfg)
	if err != nil {
		return err
	}
	be, err := df.bf.open()
	if err != nil {
		return err
	}
	state, err := client.LoadState(*statePath)
	if err != nil {
		return err
	}
	// Bootloader first, then the state: a power cut in between leaves a
	// confirmed slot with a pending record, and the next mark-good (every
	// boot runs it) completes the record.
	if err := be.MarkGood(active); err != nil {
		return fmt.Errorf("mark slot %s good: %w", active, err)
	}
	p := state.Pending
	switch {
	case p != nil && p.Slot == active:
		state.Installed, state.Pending = p.Version, nil
		if err := state.Save(*statePath); err != nil {
			return fmt.Errorf("slot %s is confirmed in the bootloader, but recording version %d failed: %w; run mark-good again", active, p.Version, err)
		}
		fmt.Fprintf(stdout, "slot %s (%s) confirmed: version %d %s is installed\n", active, how, p.Version, p.Label)
	case p != nil:
		fmt.Fprintf(stdout, "slot %s (%s) confirmed, still at version %d; the update to version %d in slot %s is not running (see 'sysupdate status')\n", active, how, state.Installed, p.Version, p.Slot)
	default:
		fmt.Fprintf(stdout, "slot %s (%s) confirmed, version %d\n", active, how, state.Installed)
	}
	return nil
}
