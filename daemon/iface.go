package daemon

import (
	"errors"
	"fmt"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
)

// D-Bus error names. Busy is what a request gets while another operation
// runs; both APIs use it.
const (
	ErrNameBusy         = "io.github.sysupdate.Error.Busy"
	ErrNameFailed       = "io.github.sysupdate.Error.Failed"
	ErrNameInvalidArgs  = "org.freedesktop.DBus.Error.InvalidArgs"
	ErrNameNotSupported = "org.freedesktop.DBus.Error.NotSupported"
)

// dbusError turns an error into a D-Bus error: Busy for ErrBusy,
// Failed otherwise, with the error's text as the message.
func dbusError(err error) *dbus.Error {
	if err == nil {
		return nil
	}
	var de *dbus.Error
	if errors.As(err, &de) {
		return de
	}
	name := ErrNameFailed
	if errors.Is(err, ErrBusy) {
		name = ErrNameBusy
	}
	return dbus.NewError(name, []any{err.Error()})
}

func invalidArgs(format string, a ...any) *dbus.Error {
	return dbus.NewError(ErrNameInvalidArgs, []any{fmt.Sprintf(format, a...)})
}

// arg is one argument of a method or signal: a name and a D-Bus type.
type arg struct{ name, sig string }

// method is one exported method: its D-Bus arguments and the Go function
// that implements it (see dbus.Conn.ExportMethodTable). The test checks
// that fn's Go types match in and out, so the introspection data is true.
type method struct {
	name    string
	in, out []arg
	fn      any
}

type signal struct {
	name string
	args []arg
}

type property struct {
	name, sig string
}

// iface is one D-Bus interface: what is exported and what Introspect says.
type iface struct {
	name    string
	methods []method
	signals []signal
	props   []property
}

func (f *iface) table() map[string]any {
	t := make(map[string]any, len(f.methods))
	for _, m := range f.methods {
		t[m.name] = m.fn
	}
	return t
}

func (f *iface) introspect() introspect.Interface {
	out := introspect.Interface{Name: f.name}
	for _, m := range f.methods {
		im := introspect.Method{Name: m.name}
		for _, a := range m.in {
			im.Args = append(im.Args, introspect.Arg{Name: a.name, Type: a.sig, Direction: "in"})
		}
		for _, a := range m.out {
			im.Args = append(im.Args, introspect.Arg{Name: a.name, Type: a.sig, Direction: "out"})
		}
		out.Methods = append(out.Methods, im)
	}
	for _, s := range f.signals {
		is := introspect.Signal{Name: s.name}
		for _, a := range s.args {
			is.Args = append(is.Args, introspect.Arg{Name: a.name, Type: a.sig})
		}
		out.Signals = append(out.Signals, is)
	}
	for _, p := range f.props {
		out.Properties = append(out.Properties, introspect.Property{Name: p.name, Type: p.sig, Access: "read"})
	}
	return out
}

// export exports the interfaces at path with their Introspect data.
func export(conn *dbus.Conn, path dbus.ObjectPath, extra []introspect.Interface, fs ...*iface) error {
	node := &introspect.Node{}
	for _, f := range fs {
		if err := conn.ExportMethodTable(f.table(), path, f.name); err != nil {
			return fmt.Errorf("daemon: export %s at %s: %w", f.name, path, err)
		}
		node.Interfaces = append(node.Interfaces, f.introspect())
	}
	node.Interfaces = append(node.Interfaces, extra...)
	if err := conn.Export(introspect.NewIntrospectable(node), path, "org.freedesktop.DBus.Introspectable"); err != nil {
		return fmt.Errorf("daemon: export introspection at %s: %w", path, err)
	}
	return nil
}
