// Command sysupdate is the device side of an A/B system updater: it
// fetches, verifies and applies update streams into the inactive slot,
// flips slots through a pluggable bootloader backend, and confirms or
// rolls back a trial. Building, signing and serving releases is the
// publisher's job (cmd/sysupdate-publish), which this binary does not link.
//
// Every subcommand lives in a file of its own and registers itself with
// register; main only dispatches. Subcommands take their arguments and
// output streams explicitly so tests call them in-process through run.
//
// Build it with the tag nethttpomithttp2 (the Makefile does): a device
// talks HTTP/1.1 to its repository, and HTTP/2 would cost half a megabyte.
package main

import (
	"context"
	"flag"
	"io"

	"github.com/sysupdate/sysupdate/internal/cli"
)

// version is set by the linker (-X main.version=...).
var version = "dev"

var prog = cli.New("sysupdate", version)

// register adds a subcommand; called from init functions.
func register(name, summary string, run cli.RunFunc) { prog.Register(name, summary, run) }

// errUsage marks an error caused by wrong arguments; main exits 2 for it.
var errUsage = cli.ErrUsage

// usageError wraps a message as a usage error.
func usageError(format string, a ...any) error { return cli.UsageError(format, a...) }

func main() { prog.Main() }

// run dispatches args[0] to its subcommand.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return prog.Run(ctx, args, stdout, stderr)
}

// newFlagSet returns a FlagSet that reports errors instead of exiting and
// prints its usage to stderr.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	return prog.NewFlagSet(name, synopsis, stderr)
}

// parseFlags parses args allowing flags after positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) { return cli.ParseFlags(fs, args) }
