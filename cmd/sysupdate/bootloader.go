package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	"github.com/sysupdate/sysupdate/bootloaders"
)

func init() {
	register("bootloader", "read or change the bootloader's slot state (status, set-next, mark-good, mark-bad)", runBootloader)
}

const bootloaderSynopsis = `status|set-next SLOT|mark-good SLOT|mark-bad SLOT [--tries N] [--json]
    [--config FILE] [--bootloader uboot --fw-env-config PATH | grub --grubenv PATH | android --misc PATH]`

func runBootloader(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bootloader", bootloaderSynopsis, stderr)
	df := addDeviceFlags(fs)
	asJSON := fs.Bool("json", false, "print the resulting status as JSON (fields: docs/bootloaders.md)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		fs.Usage()
		return usageError("bootloader: no operation given")
	}
	op := pos[0]
	wantArgs := map[string]int{"status": 0, "set-next": 1, "mark-good": 1, "mark-bad": 1}
	n, ok := wantArgs[op]
	if !ok {
		return usageError("bootloader: unknown operation %q: use status, set-next, mark-good or mark-bad", op)
	}
	if len(pos)-1 != n {
		return usageError("bootloader %s takes %d argument(s), got %d", op, n, len(pos)-1)
	}
	e, err := df.engine(fs, false)
	if err != nil {
		return err
	}
	tries := e.Config().Tries
	var st bootloaders.Status
	err = e.BootloaderOp(func(be bootloaders.Backend) error {
		var err error
		switch op {
		case "set-next":
			err = be.SetNext(pos[1], tries)
		case "mark-good":
			err = be.MarkGood(pos[1])
		case "mark-bad":
			err = be.MarkBad(pos[1])
		}
		if err != nil {
			return fmt.Errorf("bootloader %s: %w", op, err)
		}
		if st, err = be.Status(); err != nil {
			return fmt.Errorf("bootloader status: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return printStatus(stdout, st, *asJSON)
}

func printStatus(w io.Writer, st bootloaders.Status, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	fmt.Fprintf(w, "scheme: %s\nnext boot: %s\n", st.Scheme, orNone(st.Next))
	if st.TrialFailed {
		fmt.Fprintf(w, "last trial FAILED: slot %s did not confirm itself; the bootloader fell back\n", st.FailedSlot)
	}
	fmt.Fprintf(w, "%-5s %-9s %-11s %-11s %s\n", "SLOT", "BOOTABLE", "SUCCESSFUL", "TRIES LEFT", "PRIORITY")
	for _, s := range st.Slots {
		fmt.Fprintf(w, "%-5s %-9s %-11s %-11s %d\n", s.Name, yesNo(s.Bootable), yesNo(s.Successful), strconv.Itoa(s.TriesLeft), s.Priority)
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(none bootable)"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
