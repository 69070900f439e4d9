package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/sysupdate/sysupdate/updater"
)

func init() {
	register("status", "show the installed version, the running and next slot, and any rollback", runStatus)
}

// statusResult is what status prints with --json (docs/updating.md).
type statusResult = updater.Status

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", "[--config FILE] [--json]", stderr)
	df := addDeviceFlags(fs)
	asJSON := fs.Bool("json", false, "print the status as JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageError("status takes no arguments")
	}
	e, err := df.engine(fs, true)
	if err != nil {
		return err
	}
	res, err := e.Status(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	if res.StateError != "" {
		fmt.Fprintf(stdout, "STATE FILE PROBLEM: %s\n", res.StateError)
	}
	fmt.Fprintf(stdout, "installed version: %d\n", res.Installed)
	if res.Active != "" {
		fmt.Fprintf(stdout, "running slot: %s (%s)\n", res.Active, res.ActiveHow)
	} else {
		fmt.Fprintf(stdout, "running slot: unknown (%s)\n", res.ActiveErr)
	}
	if p := res.Pending; p != nil && res.Rollback == nil {
		switch {
		case p.Slot == res.Active:
			fmt.Fprintf(stdout, "pending: version %d %s is running in slot %s on trial: run 'sysupdate mark-good' to keep it\n", p.Version, p.Label, p.Slot)
		case p.Switched:
			fmt.Fprintf(stdout, "pending: version %d %s written to slot %s, waiting for a reboot\n", p.Version, p.Label, p.Slot)
		default:
			fmt.Fprintf(stdout, "pending: version %d %s written and verified in slot %s, not switched to yet (run update again, or activate a staged install)\n", p.Version, p.Label, p.Slot)
		}
	}
	if c := res.Checkpoint; c != nil {
		fmt.Fprintf(stdout, "interrupted: version %d %s into slot %s stopped at byte %d; the next update continues there\n", c.Version, c.Image, c.Slot, c.TargetOff)
	}
	if r := res.Rollback; r != nil {
		fmt.Fprintf(stdout, "ROLLBACK: %s\n", r.Message)
	}
	if h := res.Health; h != nil {
		fmt.Fprintf(stdout, "HEALTH CHECK FAILED: %s on slot %s (%s): %s; action: %s\n", h.Check, h.Slot, h.Time.Format("2006-01-02 15:04:05Z"), h.Error, h.Action)
		for _, l := range strings.Split(h.Output, "\n") {
			if l != "" {
				fmt.Fprintf(stdout, "  | %s\n", l)
			}
		}
	}
	fmt.Fprintf(stdout, "scheme: %s\nnext boot: %s\n", res.Bootloader.Scheme, orNone(res.NextBoot))
	if res.Bootloader.TrialFailed {
		fmt.Fprintf(stdout, "last trial FAILED: slot %s did not confirm itself; the bootloader fell back\n", res.Bootloader.FailedSlot)
	}
	fmt.Fprintf(stdout, "%-5s %-7s %-9s %-11s %-11s %s\n", "SLOT", "BOOTED", "BOOTABLE", "SUCCESSFUL", "TRIES LEFT", "VERSION")
	for _, s := range res.Slots {
		v := "-"
		if s.Version != 0 {
			v = fmt.Sprintf("%d %s", s.Version, s.Label)
			if s.Confirmed {
				v += " (confirmed)"
			}
		}
		fmt.Fprintf(stdout, "%-5s %-7s %-9s %-11s %-11d %s\n", s.Name, yesNo(s.Booted), yesNo(s.Bootable), yesNo(s.Successful), s.TriesLeft, strings.TrimSpace(v))
	}
	return nil
}
