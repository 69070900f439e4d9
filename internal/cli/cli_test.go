package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
)

func TestParseFlagsAfterPositional(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		target string
		pos    []string
	}{
		{[]string{"s.sus", "--target", "x"}, "x", []string{"s.sus"}},
		{[]string{"--target", "x", "-"}, "x", []string{"-"}},
		{[]string{"a", "--", "--target"}, "", []string{"a", "--target"}},
		{[]string{"a", "b", "-target=y"}, "y", []string{"a", "b"}},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		target := fs.String("target", "", "")
		pos, err := ParseFlags(fs, tc.args)
		if err != nil || *target != tc.target || !slices.Equal(pos, tc.pos) {
			t.Errorf("ParseFlags(%q) = %q, target %q, %v; want %q, %q", tc.args, pos, *target, err, tc.pos, tc.target)
		}
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if _, err := ParseFlags(fs, []string{"--nope"}); !errors.Is(err, ErrUsage) {
		t.Errorf("unknown flag: %v, want a usage error", err)
	}
	if _, err := ParseFlags(fs, []string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}
}

func TestRunDispatches(t *testing.T) {
	p := New("tool", "1.2")
	var got []string
	p.Register("echo", "print the arguments", func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		got = args
		return nil
	})
	var out, errb bytes.Buffer
	if err := p.Run(context.Background(), []string{"echo", "a", "b"}, &out, &errb); err != nil || !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("echo: %v, args %q", err, got)
	}
	if err := p.Run(context.Background(), []string{"version"}, &out, &errb); err != nil || out.String() != "tool 1.2\n" {
		t.Fatalf("version: %v, %q", err, out.String())
	}
	if err := p.Run(context.Background(), []string{"nope"}, &out, &errb); !errors.Is(err, ErrUsage) || !strings.Contains(errb.String(), "echo") {
		t.Fatalf("unknown command: %v; usage printed: %q", err, errb.String())
	}
	if err := p.Run(context.Background(), nil, &out, &errb); !errors.Is(err, ErrUsage) {
		t.Fatalf("no command: %v", err)
	}
	errb.Reset()
	fs := p.NewFlagSet("echo", "ARGS", &errb)
	fs.Usage()
	if !strings.HasPrefix(errb.String(), "usage: tool echo ARGS") {
		t.Fatalf("flag set usage: %q", errb.String())
	}
}

func TestParseFlagsDoubleDash(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	target := fs.String("target", "", "")
	pos, err := ParseFlags(fs, []string{"--target", "x", "--", "-odd-name"})
	if err != nil || *target != "x" || !slices.Equal(pos, []string{"-odd-name"}) {
		t.Fatalf("got %q, target %q, %v", pos, *target, err)
	}
}
