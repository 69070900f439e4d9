package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysupdate/sysupdate/internal/testbin"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

// runOK runs a sysupdate command in-process and fails the test on error.
func runOK(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if err := run(context.Background(), args, &out, &errb); err != nil {
		t.Fatalf("sysupdate %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

// publishCmd runs the publisher binary (keygen, keyring, publish, delta:
// what a build host does before a device sees anything) and returns its
// output and error.
func publishCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, errOut, err := testbin.Run(testbin.Build(t, testbin.Publisher, ""), args...)
	return out + errOut, err
}

// publishOK runs the publisher binary and fails the test on error.
func publishOK(t *testing.T, args ...string) string {
	t.Helper()
	out, err := publishCmd(t, args...)
	if err != nil {
		t.Fatalf("sysupdate-publish %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

type syncBuffer = testbin.SyncBuffer

// lockFile takes an exclusive flock on path (creating it), as a running
// update holds the device lock (updater takes it beside the state file).
func lockFile(path string) (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another sysupdate update is running (it holds %s); wait for it to finish", path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
