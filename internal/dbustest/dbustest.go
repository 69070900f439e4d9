// Package dbustest starts a private dbus-daemon for tests, so that real
// clients (the rauc CLI, gdbus, Qt programs) and the daemon meet on a bus
// of their own and never on the machine's system bus.
package dbustest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// openPolicy lets every connection own and call everything.
const openPolicy = `<policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>`

// Bus is a running private bus.
type Bus struct {
	// Address is the bus address (unix:path=...).
	Address string
	Dir     string
}

// Env returns the environment that points D-Bus clients at the bus, as
// both the system and the session bus.
func (b *Bus) Env() []string {
	return append(os.Environ(),
		"DBUS_SYSTEM_BUS_ADDRESS="+b.Address,
		"DBUS_SESSION_BUS_ADDRESS="+b.Address,
	)
}

// Start starts dbus-daemon with an open policy; it stops at the end of
// the test.
func Start(t testing.TB) *Bus {
	return StartWith(t, openPolicy, "")
}

// StartWith starts dbus-daemon with the given <policy> elements and, if
// includeDir is not "", the policy files in it (as /usr/share/dbus-1/system.d).
func StartWith(t testing.TB, policy, includeDir string) *Bus {
	t.Helper()
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		t.Fatalf("dbus-daemon missing: run make deps (scripts/install-deps.sh installs dbus)")
	}
	dir := t.TempDir()
	// Other users connect too (policy tests run clients as nobody).
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	inc := ""
	if includeDir != "" {
		inc = "<includedir>" + includeDir + "</includedir>"
	}
	conf := fmt.Sprintf(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  %s
  %s
</busconfig>
`, filepath.Join(dir, "bus"), policy, inc)
	cf := filepath.Join(dir, "bus.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("dbus-daemon", "--config-file="+cf, "--nofork", "--print-address")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	// stderr is discarded: as root it warns that it cannot raise its fd
	// limit, which does not matter here.
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dbus-daemon: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case a := <-line:
		if a == "" {
			t.Fatalf("dbus-daemon printed no address (config %s)", cf)
		}
		return &Bus{Address: a, Dir: dir}
	case <-time.After(10 * time.Second):
		t.Fatal("dbus-daemon did not start within 10 s")
	}
	return nil
}
