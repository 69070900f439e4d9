// Package cli is the command-line plumbing the sysupdate binaries share:
// a registry of subcommands and its dispatcher, flag sets that report
// errors instead of exiting and accept flags after positional arguments,
// usage errors (exit status 2), and a Main that cancels the context on
// SIGINT and SIGTERM.
//
// It holds no subcommand: the device binary (cmd/sysupdate) and the
// publisher (cmd/sysupdate-publish) each register their own, so neither
// links the other's code.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// RunFunc runs one subcommand with its arguments (without the command's
// name) and explicit output streams, so tests call it in-process. It
// returns when the work is done or ctx is cancelled.
type RunFunc func(ctx context.Context, args []string, stdout, stderr io.Writer) error

type command struct {
	summary string
	run     RunFunc
}

// Program is one binary's set of subcommands. The zero value is not
// usable; call New. Register is meant for init functions; Run may then be
// called from any number of goroutines.
type Program struct {
	name     string
	version  string
	commands map[string]command
}

// New returns an empty Program whose usage and version lines carry name.
func New(name, version string) *Program {
	return &Program{name: name, version: version, commands: map[string]command{}}
}

// Register adds a subcommand. A duplicate name is a programming error and
// panics at init.
func (p *Program) Register(name, summary string, run RunFunc) {
	if _, dup := p.commands[name]; dup {
		panic(p.name + ": duplicate command " + name)
	}
	p.commands[name] = command{summary: summary, run: run}
}

// ErrUsage marks an error caused by wrong arguments; Main exits 2 for it.
var ErrUsage = errors.New("usage")

// UsageError wraps a message as a usage error.
func UsageError(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, a...))
}

// Main runs the program on os.Args with a context cancelled by SIGINT or
// SIGTERM, prints the error and exits: 0 on success, 2 for usage errors
// and -h, 1 otherwise.
func (p *Program) Main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := p.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "%s: %v\n", p.name, err)
		}
		if errors.Is(err, ErrUsage) || errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// Run dispatches args[0] to its subcommand; "help", "-h" and "--help"
// print the command list, "version" the version.
func (p *Program) Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		p.printUsage(stderr)
		if len(args) == 0 {
			return UsageError("no command given")
		}
		return nil
	}
	if args[0] == "version" || args[0] == "--version" {
		fmt.Fprintf(stdout, "%s %s\n", p.name, p.version)
		return nil
	}
	c, ok := p.commands[args[0]]
	if !ok {
		p.printUsage(stderr)
		return UsageError("unknown command %q; see the list above", args[0])
	}
	return c.run(ctx, args[1:], stdout, stderr)
}

func (p *Program) printUsage(w io.Writer) {
	fmt.Fprintf(w, "usage: %s COMMAND [flags] [args]\n\ncommands:\n", p.name)
	names := make([]string, 0, len(p.commands))
	for n := range p.commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, p.commands[n].summary)
	}
	fmt.Fprintf(w, "  %-12s %s\n", "version", "print the version")
	fmt.Fprintf(w, "\nRun '%s COMMAND -h' for a command's flags.\n", p.name)
}

// NewFlagSet returns a FlagSet for subcommand name that reports errors
// instead of exiting and prints its usage (with synopsis) to stderr.
func (p *Program) NewFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s %s %s\n", p.name, name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// ParseFlags parses args allowing flags after positional arguments
// (sysupdate apply STREAM --target X), which users type all the time, and
// returns the positional arguments. "--" ends the flags; "-" is positional
// (stdin). A bad flag is a usage error; -h returns flag.ErrHelp.
func ParseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if len(args) > 0 && args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", ErrUsage, err)
		}
		rest := fs.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil // Parse ate the "--"
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0]) // Parse stopped at a positional argument
		args = rest[1:]
	}
}
