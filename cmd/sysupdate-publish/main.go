// Command sysupdate-publish is the publisher side of sysupdate: it makes
// and rotates keys (keygen, keyring), builds update streams (delta),
// publishes signed releases to a repository directory and promotes them
// between channels (publish, promote), and serves a repository over HTTP
// for development and tests (serve). It runs on a build host, never on a
// device; the device binary is cmd/sysupdate.
//
// Every subcommand lives in a file of its own and registers itself with
// register; main only dispatches. Subcommands take their arguments and
// output streams explicitly so tests call them in-process through run.
package main

import (
	"context"
	"flag"
	"io"

	"github.com/sysupdate/sysupdate/internal/cli"
)

// version is set by the linker (-X main.version=...).
var version = "dev"

var prog = cli.New("sysupdate-publish", version)

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
