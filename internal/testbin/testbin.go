// Package testbin builds this module's commands for tests that run them
// as processes: the device binary's tests drive the publisher
// (cmd/sysupdate-publish) to make keys, releases and streams, and the
// publisher's tests run the device binary to check what a device sees.
//
// Only tests import it. Each command is built once per test process into
// a temporary directory that Cleanup removes; call Cleanup from TestMain.
package testbin

import (
	"bytes"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Module is the import path of this module.
const Module = "github.com/sysupdate/sysupdate"

// Publisher and Device are the import paths of the two commands.
const (
	Publisher = Module + "/cmd/sysupdate-publish"
	Device    = Module + "/cmd/sysupdate"
)

// DeviceTags are the build tags the device binary ships with (the
// Makefile's build uses the same).
const DeviceTags = "nethttpomithttp2"

var (
	mu    sync.Mutex
	dir   string
	built = map[string]string{}
)

// Build returns the path of a binary of pkg built with the given tags
// (comma-separated, may be empty), building it on first use. It fails t if
// the build fails.
func Build(t testing.TB, pkg, tags string) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	key := pkg + " " + tags
	if bin, ok := built[key]; ok {
		return bin
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "testbin")
		if err != nil {
			t.Fatalf("testbin: %v", err)
		}
		dir = d
	}
	bin := filepath.Join(dir, path.Base(pkg)+"-"+strings.ReplaceAll(tags, ",", "-"))
	cmd := exec.Command("go", "build", "-tags", tags, "-o", bin, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testbin: go build %s: %v\n%s", pkg, err, out)
	}
	built[key] = bin
	return bin
}

// Run runs bin with args and returns its standard output and error.
func Run(bin string, args ...string) (stdout, stderr string, err error) {
	var o, e strings.Builder
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// Cleanup removes the binaries Build made.
func Cleanup() {
	mu.Lock()
	defer mu.Unlock()
	if dir != "" {
		os.RemoveAll(dir)
		dir, built = "", map[string]string{}
	}
}

// SyncBuffer is a bytes.Buffer that a process's output goroutine writes
// while a test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
