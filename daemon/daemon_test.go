package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
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
	return serveOn(t, eng, cfg, "", "")
}

// serveOn serves on a bus with the given policy ("" for an open one) and
// policy directory.
func serveOn(t *testing.T, eng *fakeEngine, cfg Config, policy, policyDir string) *running {
	t.Helper()
	var bus *dbustest.Bus
	if policy == "" {
		bus = dbustest.Start(t)
	} else {
		bus = dbustest.StartWith(t, policy, policyDir)
	}
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
		`<signal name="UpdateDownloaded">`, `<signal name="UpdateAvailableStatus"><arg name="is_available" type="b"/>`,
		`<method name="ApplyUpdate"><arg name="message" type="s" direction="out"/>`,
		`<method name="Information"><arg name="info" type="a{ss}" direction="out"/>`,
	} {
		if !strings.Contains(xml, want) {
			t.Errorf("system-image introspection lacks %s:\n%s", want, xml)
		}
	}
	// GLib's parser reads it too (Qt's and GLib's clients introspect).
	needTool(t, "gdbus")
	out, code := r.cmd("gdbus", "introspect", "--system", "--dest", SystemImageName, "--object-path", "/Service")
	if code != 0 || !regexp.MustCompile(`(?s)signals:.*UpdateDownloaded\(\);`).MatchString(out) || !strings.Contains(out, "Information(out a{ss} info);") {
		t.Errorf("gdbus introspect (exit %d):\n%s", code, out)
	}
	if err := r.cli.Object(RAUCName, RAUCPath).Call("org.freedesktop.DBus.Introspectable.Introspect", 0).Store(&xml); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`<interface name="de.pengutronix.rauc.Installer">`, `<signal name="Completed"><arg name="result" type="i"/>`,
		`<property name="Progress" type="(isi)" access="read"/>`, `<interface name="org.freedesktop.DBus.Properties">`,
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
		Compatible  string `json:"compatible"`
		Booted      string `json:"booted"`
		BootPrimary string `json:"boot_primary"`
		Slots       []map[string]struct {
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

// TestBusy: an install from the RAUC side while the UI asks for a check
// and a second RAUC install: one operation runs, the others get a clear
// busy error, and the engine saw one install only.
func TestBusy(t *testing.T) {
	needTool(t, "rauc")
	eng := newFakeEngine()
	eng.gate = make(chan struct{})
	r := serve(t, eng, Config{})
	bundle := filepath.Join(t.TempDir(), "update.sus")
	os.WriteFile(bundle, []byte("x"), 0o644)
	type res struct {
		out  string
		code int
	}
	first := make(chan res, 1)
	go func() {
		out, code := r.cmd("rauc", "install", bundle)
		first <- res{out, code}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for r.d.Current() == nil {
		if time.Now().After(deadline) {
			t.Fatal("the install did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The UI checks: a Busy error naming what runs, and the signal says so.
	sigs := make(chan *dbus.Signal, 10)
	r.cli.AddMatchSignal(dbus.WithMatchInterface(SystemImageName), dbus.WithMatchMember("UpdateAvailableStatus"))
	r.cli.Signal(sigs)
	call := r.cli.Object(SystemImageName, SystemImagePath).Call(SystemImageName+".CheckForUpdate", 0)
	var de dbus.Error
	if !errors.As(call.Err, &de) || de.Name != ErrNameBusy || !strings.Contains(de.Error(), "another operation is running: install (asked by rauc)") {
		t.Fatalf("CheckForUpdate during an install: %v", call.Err)
	}
	select {
	case s := <-sigs:
		if len(s.Body) != 6 || s.Body[5].(string) == "" || !strings.Contains(s.Body[5].(string), "another operation is running") {
			t.Errorf("UpdateAvailableStatus during an install: %v", s.Body)
		}
	case <-time.After(5 * time.Second):
		t.Error("no UpdateAvailableStatus after a refused check")
	}
	// A second rauc install: a D-Bus error, not a second writer.
	out, code := r.cmd("rauc", "install", bundle)
	if code == 0 || !strings.Contains(out, "another operation is running") {
		t.Errorf("second rauc install (exit %d):\n%s", code, out)
	}
	close(eng.gate)
	f := <-first
	if f.code != 0 {
		t.Errorf("first install (exit %d):\n%s", f.code, f.out)
	}
	n := 0
	for _, c := range eng.Calls() {
		if strings.HasPrefix(c, "install") {
			n++
		}
		if c == "check" {
			t.Error("the engine ran a check during the install")
		}
	}
	if n != 1 {
		t.Errorf("engine installs: %d (%v), want 1", n, eng.Calls())
	}
}

// TestShutdownMidInstall: cancelling Run's context (SIGTERM) during an
// install cancels the engine's context and Run returns promptly; the rauc
// client sees the install fail.
func TestShutdownMidInstall(t *testing.T) {
	needTool(t, "rauc")
	eng := newFakeEngine()
	eng.steps, eng.stepDelay = 1000, 20*time.Millisecond // 20 s if not stopped
	r := serve(t, eng, Config{})
	bundle := filepath.Join(t.TempDir(), "update.sus")
	os.WriteFile(bundle, []byte("x"), 0o644)
	done := make(chan int, 1)
	go func() {
		_, code := r.cmd("rauc", "install", bundle)
		done <- code
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if op := r.d.Current(); op != nil && op.Percent > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the install made no progress")
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	r.stop()
	select {
	case err := <-r.errc:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5 s of the shutdown")
	}
	r.errc <- nil // for the cleanup
	t.Logf("Run returned %v after the shutdown", time.Since(start))
	eng.mu.Lock()
	ctxErr := eng.lastCtx.Err()
	written := eng.done
	eng.mu.Unlock()
	if ctxErr == nil || written == 0 || written >= 1000 {
		t.Errorf("engine context %v, %d of 1000 written", ctxErr, written)
	}
	select {
	case code := <-done:
		if code == 0 {
			t.Error("rauc install reported success for a stopped install")
		}
	case <-time.After(5 * time.Second):
		t.Error("rauc install did not end")
	}
}

// TestPolicyAndSettings: periodic checks follow the policy; settings
// persist across restarts and bad values are refused.
func TestPolicyAndSettings(t *testing.T) {
	for _, tc := range []struct {
		policy Policy
		want   string
	}{
		{PolicyCheck, "check"},
		{PolicyDownload, "check;install  noswitch=true"},
		{PolicyInstall, "check;install  noswitch=false"},
	} {
		eng := newFakeEngine()
		eng.stepDelay = time.Millisecond
		r := serve(t, eng, Config{Policy: tc.policy, Interval: 20 * time.Millisecond, RandomDelay: 10 * time.Millisecond})
		deadline := time.Now().Add(5 * time.Second)
		for !strings.HasPrefix(strings.Join(eng.Calls(), ";"), tc.want) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		r.stop()
		if c := strings.Join(eng.Calls(), ";"); !strings.HasPrefix(c, tc.want) {
			t.Errorf("policy %s: engine calls %s, want %s first", tc.policy, c, tc.want)
		}
	}

	path := filepath.Join(t.TempDir(), "settings.json")
	r := serve(t, newFakeEngine(), Config{SettingsPath: path})
	o := r.cli.Object(SystemImageName, SystemImagePath)
	if err := o.Call(SystemImageName+".SetSetting", 0, "min_battery", "25").Err; err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][2]string{{"auto_download", "3"}, {"min_battery", "x"}, {"colour", "red"}} {
		if err := o.Call(SystemImageName+".SetSetting", 0, bad[0], bad[1]).Err; err == nil {
			t.Errorf("SetSetting %s=%s accepted", bad[0], bad[1])
		}
	}
	var ok bool
	if err := o.Call(SystemImageName+".SetChannel", 0, "testing").Store(&ok); err != nil || ok {
		t.Errorf("SetChannel to a channel not offered: %v, %v", ok, err)
	}
	d2, err := New(newFakeEngine(), Config{SettingsPath: path})
	if err != nil {
		t.Fatal(err)
	}
	if v := d2.settings.get("min_battery"); v != "25" {
		t.Errorf("min_battery after a restart: %q", v)
	}

	// Offered channels can be chosen, and the choice survives a restart.
	eng := newFakeEngine()
	path2 := filepath.Join(t.TempDir(), "settings.json")
	r = serve(t, eng, Config{SettingsPath: path2, Channels: []string{"testing"}})
	o = r.cli.Object(SystemImageName, SystemImagePath)
	var chans []string
	if err := o.Call(SystemImageName+".GetChannels", 0).Store(&chans); err != nil || strings.Join(chans, ",") != "stable,testing" {
		t.Errorf("GetChannels: %v, %v", chans, err)
	}
	if err := o.Call(SystemImageName+".SetChannel", 0, "testing").Store(&ok); err != nil || !ok {
		t.Errorf("SetChannel testing: %v, %v", ok, err)
	}
	eng2 := newFakeEngine()
	if _, err := New(eng2, Config{SettingsPath: path2}); err != nil || eng2.st.Channel != "testing" {
		t.Errorf("channel after a restart: %q, %v", eng2.st.Channel, err)
	}
}
