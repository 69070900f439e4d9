package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
)

func init() {
	register("mark-good", "run the health checks, then confirm that the running slot works: stop the trial countdown and record its version", runMarkGood)
	register("rollback", "switch the next boot back to the other slot, when it holds a confirmed release", runRollback)
}

func runMarkGood(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("mark-good", "[--config FILE] [--slot S] [--json]", stderr)
	df := addDeviceFlags(fs)
	asJSON := fs.Bool("json", false, "print the outcome as JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageError("mark-good takes no arguments; it confirms the running slot (--slot to name it)")
	}
	e, err := df.engine(fs, true)
	if err != nil {
		return err
	}
	r := newRenderer(stderr, stderr, false, nil)
	res, err := e.MarkGood(ctx, r.event)
	if *asJSON && res != nil {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(res)
	}
	if err != nil {
		return err
	}
	if !*asJSON {
		switch {
		case res.Promoted:
			fmt.Fprintf(stdout, "slot %s (%s) confirmed: version %d %s is installed\n", res.Slot, res.How, res.Version, res.Label)
		default:
			fmt.Fprintf(stdout, "slot %s (%s) confirmed, version %d\n", res.Slot, res.How, res.Version)
		}
	}
	return nil
}

func runRollback(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("rollback", "[--config FILE] [--slot S] [--no-reboot]", stderr)
	df := addDeviceFlags(fs)
	noReboot := fs.Bool("no-reboot", false, "do not reboot after switching")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageError("rollback takes no arguments")
	}
	e, err := df.engine(fs, true)
	if err != nil {
		return err
	}
	res, err := e.Rollback(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "next boot: slot %s, version %d %s (on trial, %d boots; run 'sysupdate mark-good' there); slot %s stays the fallback\n", res.To, res.Version, res.Label, res.Tries, res.From)
	if !*noReboot {
		fmt.Fprintf(stdout, "rebooting into slot %s\n", res.To)
		return rebootFunc(ctx)
	}
	return nil
}
