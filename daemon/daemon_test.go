package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/sysupdate/sysupdate/internal/dbustest"
)

// running is a daemon serving on a private bus.
type running struct {
	t    *testing.T
	bus  *dbustest.Bus
	d    *Daemon
	eng  *fakeEngine
	conn *dbus.Conn // the daemon's
	cli  *dbus.Conn // a client's
	stop context.CancelFunc
	errc chan error
}

func serve(t *testing.T, eng *fakeEngine, cfg Config) *running {
	t.Helper()
	bus := dbustest.Start(t)
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	d, err := New(eng, cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn := connect(t, bus)
	ctx, stop := context.WithCancel(context.Background())
	r := &running{t: t, bus: bus, d: d, eng: eng, conn: conn, stop: stop, errc: make(chan error, 1)}
	go func() { r.errc <- d.Run(ctx, conn) }()
	r.cli = connect(t, bus)
	// Wait for the names.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var has bool
		if err := r.cli.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, SystemImageName).Store(&has); err == nil && has {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the daemon did not take its names within 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() {
		stop()
		select {
		case <-r.errc:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return")
		}
	})
	return r
}

func connect(t *testing.T, bus *dbustest.Bus) *dbus.Conn {
	t.Helper()
	c, err := dbus.Connect(bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// cmd runs a client program against the bus.
func (r *running) cmd(name string, args ...string) (string, int) {
	r.t.Helper()
	c := exec.Command(name, args...)
	c.Env = r.bus.Env()
	out, err := c.CombinedOutput()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			r.t.Fatalf("%s: %v", name, err)
		}
		code = ee.ExitCode()
	}
	return string(out), code
}

func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s missing: run make deps (scripts/install-deps.sh)", name)
	}
}

// TestIntrospectionMatchesCode: every method's Go function takes and
// returns exactly the D-Bus types its introspection data lists.
func TestIntrospectionMatchesCode(t *testing.T) {
	d, err := New(newFakeEngine(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	r := &rauc{d: d}
	s := &systemImage{d: d}
	errType := reflect.TypeOf((*dbus.Error)(nil))
	for _, f := range []*iface{r.iface(), s.iface(SystemImageName), d.ownIface()} {
		for _, m := range f.methods {
			ft := reflect.TypeOf(m.fn)
			var in, out []string
			for i := range ft.NumIn() {
				in = append(in, dbus.SignatureOfType(ft.In(i)).String())
			}
			for i := range ft.NumOut() {
				if ft.Out(i) == errType {
					if i != ft.NumOut()-1 {
						t.Errorf("%s.%s: *dbus.Error is not the last result", f.name, m.name)
					}
					continue
				}
				out = append(out, dbus.SignatureOfType(ft.Out(i)).String())
			}
			if ft.NumOut() == 0 || ft.Out(ft.NumOut()-1) != errType {
				t.Errorf("%s.%s: does not return *dbus.Error last", f.name, m.name)
			}
			if got, want := strings.Join(in, ","), sigs(m.in); got != want {
				t.Errorf("%s.%s: Go takes (%s), introspection says (%s)", f.name, m.name, got, want)
			}
			if got, want := strings.Join(out, ","), sigs(m.out); got != want {
				t.Errorf("%s.%s: Go returns (%s), introspection says (%s)", f.name, m.name, got, want)
			}
		}
	}
}

func sigs(as []arg) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.sig
	}
	return strings.Join(s, ",")
}

// TestIntrospectXML: what a client's Introspect returns lists every
// method, signal and property (the UBports UI connects to the signals only
// if UpdateDownloaded is listed).
func TestIntrospectXML(t *testing.T) {
	r := serve(t, newFakeEngine(), Config{})
	var xml string
	if err := r.cli.Object(SystemImageName, SystemImagePath).Call("org.freedesktop.DBus.Introspectable.Introspect", 0).Store(&xml); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`<interface name="com.ubports.SystemImage">`, `<interface name="com.canonical.SystemImage">`,
		`<signal name="UpdateDownloaded">`, `<signal name="UpdateAvailableStatus"><arg name="is_available" type="b">`,
		`<method name="ApplyUpdate"><arg name="message" type="s" direction="out">`,
		`<method name="Information"><arg name="info" type="a{ss}" direction="out">`,
	} {
		if !strings.Contains(xml, want) {
			t.Errorf("system-image introspection lacks %s:\n%s", want, xml)
		}
	}
	if err := r.cli.Object(RAUCName, RAUCPath).Call("org.freedesktop.DBus.Introspectable.Introspect", 0).Store(&xml); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`<interface name="de.pengutronix.rauc.Installer">`, `<signal name="Completed"><arg name="result" type="i">`,
		`<property name="Progress" type="(isi)" access="read">`, `<interface name="org.freedesktop.DBus.Properties">`,
	} {
		if !strings.Contains(xml, want) {
			t.Errorf("RAUC introspection lacks %s:\n%s", want, xml)
		}
	}
}

// TestRAUCCLI drives the daemon with Debian's unmodified rauc CLI.
func TestRAUCCLI(t *testing.T) {
	needTool(t, "rauc")
	eng := newFakeEngine()
	r := serve(t, eng, Config{Variant: "test-variant"})

	out, code := r.cmd("rauc", "status")
	if code != 0 || !strings.Contains(out, "Compatible:  board") || !strings.Contains(out, "Variant:     test-variant") ||
		!strings.Contains(out, "Booted from: rootfs.0 (a)") || !strings.Contains(out, "Activated: rootfs.0 (a)") {
		t.Fatalf("rauc status (exit %d):\n%s", code, out)
	}
	out, code = r.cmd("rauc", "status", "--detailed")
	if code != 0 || !strings.Contains(out, "version=1") {
		t.Fatalf("rauc status --detailed (exit %d):\n%s", code, out)
	}
	out, code = r.cmd("rauc", "status", "--detailed", "--output-format=json")
	var js struct {
		Compatible string `json:"compatible"`
		Booted     string `json:"booted"`
		BootPrimary string `json:"boot_primary"`
		Slots      []map[string]struct {
			State      string `json:"state"`
			BootStatus string `json:"boot_status"`
			SlotStatus struct {
				Bundle struct {
					Version string `json:"version"`
				} `json:"bundle"`
			} `json:"slot_status"`
		} `json:"slots"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &js) != nil {
		t.Fatalf("rauc status --output-format=json (exit %d):\n%s", code, out)
	}
	slots := map[string]string{}
	for _, m := range js.Slots {
		for n, s := range m {
			slots[n] = s.State + "/" + s.BootStatus + "/" + s.SlotStatus.Bundle.Version
		}
	}
	if js.Compatible != "board" || js.Booted != "a" || js.BootPrimary != "rootfs.0" ||
		slots["rootfs.0"] != "booted/good/1" || slots["rootfs.1"] != "inactive/bad/" {
		t.Fatalf("rauc status json: %+v %v\n%s", js, slots, out)
	}

	// Install: progress lines, exit 0, the engine was asked for a switch.
	bundle := filepath.Join(t.TempDir(), "update.sus")
	if err := os.WriteFile(bundle, []byte("a stream the fake engine never reads"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code = r.cmd("rauc", "install", bundle)
	if code != 0 || !strings.Contains(out, "Installing") || !strings.Contains(out, "100% Installing done.") {
		t.Fatalf("rauc install (exit %d):\n%s", code, out)
	}
	if c := eng.Calls(); c[len(c)-1] != "install "+bundle+" noswitch=false" {
		t.Fatalf("engine calls: %v", c)
	}
	out, _ = r.cmd("rauc", "status")
	if !strings.Contains(out, "Activated: rootfs.1 (b)") {
		t.Fatalf("after install:\n%s", out)
	}

	// A failing install: exit 1, the engine's error as LastError.
	eng.mu.Lock()
	eng.failWith = errors.New("rootfs: stream hash mismatch at op 3; nothing switched")
	eng.mu.Unlock()
	out, code = r.cmd("rauc", "install", bundle)
	if code != 1 || !strings.Contains(out, "LastError: rootfs: stream hash mismatch at op 3; nothing switched") {
		t.Fatalf("failing rauc install (exit %d):\n%s", code, out)
	}
	// A relative path is refused before anything runs.
	if out, code = r.cmd("rauc", "install", "relative.sus"); code == 0 {
		t.Fatalf("relative bundle accepted:\n%s", out)
	}

	// Marks.
	for _, tc := range []struct {
		args []string
		want string
		call string
	}{
		{[]string{"status", "mark-good"}, "marked slot rootfs.0 as good", "mark-good"},
		{[]string{"status", "mark-bad", "other"}, "marked slot rootfs.1 as bad", "mark-bad b"},
		{[]string{"status", "mark-active", "other"}, "activated slot rootfs.1", "set-next b"},
	} {
		out, code := r.cmd("rauc", tc.args...)
		c := eng.Calls()
		if code != 0 || !strings.Contains(out, tc.want) || c[len(c)-1] != tc.call {
			t.Errorf("rauc %v (exit %d, calls %v):\n%s", tc.args, code, c, out)
		}
	}
	if out, code := r.cmd("rauc", "status", "mark-good", "other"); code == 0 || !strings.Contains(out, "confirms only the running slot") {
		t.Errorf("mark-good other (exit %d):\n%s", code, out)
	}
}
