package daemon

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// systemBase is the part of Debian's /usr/share/dbus-1/system.conf that
// matters for a service's policy: method calls are denied unless a policy
// allows them; signals and replies go through.
const systemBase = `<policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>`

// TestShippedPolicy runs the daemon on a bus configured like Debian's
// system bus plus dist/dbus/sysupdate.conf: root owns the names, and a
// user outside the sysupdate group may read but not install, mark or
// change settings.
func TestShippedPolicy(t *testing.T) {
	needTool(t, "gdbus")
	needTool(t, "setpriv")
	dir, err := filepath.Abs("../dist/dbus")
	if err != nil {
		t.Fatal(err)
	}
	r := serveOn(t, newFakeEngine(), Config{}, systemBase, dir)
	call := func(asNobody bool, dest string, path, method string, args ...string) (string, bool) {
		a := []string{"call", "--system", "--dest", dest, "--object-path", path, "--method", method}
		a = append(a, args...)
		name := "gdbus"
		if asNobody {
			a = append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "gdbus"}, a...)
			name = "setpriv"
		}
		out, code := r.cmd(name, a...)
		return out, code == 0
	}
	for _, tc := range []struct {
		dest, path, method string
		args               []string
		nobody             bool
	}{
		{RAUCName, "/", "de.pengutronix.rauc.Installer.GetSlotStatus", nil, true},
		{RAUCName, "/", "de.pengutronix.rauc.Installer.GetPrimary", nil, true},
		{RAUCName, "/", "org.freedesktop.DBus.Properties.GetAll", []string{RAUCIface}, true},
		{RAUCName, "/", "org.freedesktop.DBus.Introspectable.Introspect", nil, true},
		{RAUCName, "/", "de.pengutronix.rauc.Installer.Mark", []string{"bad", "other"}, false},
		{RAUCName, "/", "de.pengutronix.rauc.Installer.InstallBundle", []string{"/nonexistent.sus", "{}"}, false},
		{SystemImageName, "/Service", SystemImageName + ".Information", nil, true},
		{SystemImageName, "/Service", SystemImageName + ".GetSetting", []string{"auto_download"}, true},
		{SystemImageName, "/Service", SystemImageName + ".SetSetting", []string{"auto_download", "0"}, false},
		{SystemImageLegacyName, "/Service", SystemImageLegacyName + ".CheckForUpdate", nil, false},
		{SystemImageName, "/Service", SystemImageName + ".ApplyUpdate", nil, false},
		{Name, string(Path), Iface + ".CheckNow", nil, false},
	} {
		out, ok := call(true, tc.dest, tc.path, tc.method, tc.args...)
		if ok != tc.nobody || (!ok && !strings.Contains(out, "AccessDenied")) {
			t.Errorf("nobody calls %s: allowed %v, want %v:\n%s", tc.method, ok, tc.nobody, out)
		}
	}
	// root may call what nobody may not (these succeed on the fake engine).
	for _, m := range [][]string{
		{SystemImageName, "/Service", SystemImageName + ".SetSetting", "min_battery", "30"},
		{RAUCName, "/", "de.pengutronix.rauc.Installer.Mark", "active", "other"},
	} {
		if out, ok := call(false, m[0], m[1], m[2], m[3:]...); !ok {
			t.Errorf("root calls %s: %s", m[2], out)
		}
	}
	// Only root may own the names.
	out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", "DBUS_SYSTEM_BUS_ADDRESS="+r.bus.Address,
		"gdbus", "call", "--system", "--dest", "org.freedesktop.DBus", "--object-path", "/org/freedesktop/DBus",
		"--method", "org.freedesktop.DBus.RequestName", "com.example.NotOurs", "4").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "AccessDenied") {
		t.Errorf("nobody owns a name: %v\n%s", err, out)
	}
}
