package daemon

import (
	"errors"
	"fmt"

	"strings"
	"sync"

	"github.com/godbus/dbus/v5"
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

// xml writes the interface's introspection data.
func (f *iface) xml(b *strings.Builder) {
	fmt.Fprintf(b, "  <interface name=%q>\n", f.name)
	for _, m := range f.methods {
		fmt.Fprintf(b, "    <method name=%q>", m.name)
		for _, a := range m.in {
			fmt.Fprintf(b, "<arg name=%q type=%q direction=\"in\"/>", a.name, a.sig)
		}
		for _, a := range m.out {
			fmt.Fprintf(b, "<arg name=%q type=%q direction=\"out\"/>", a.name, a.sig)
		}
		b.WriteString("</method>\n")
	}
	for _, s := range f.signals {
		fmt.Fprintf(b, "    <signal name=%q>", s.name)
		for _, a := range s.args {
			fmt.Fprintf(b, "<arg name=%q type=%q/>", a.name, a.sig)
		}
		b.WriteString("</signal>\n")
	}
	for _, p := range f.props {
		fmt.Fprintf(b, "    <property name=%q type=%q access=\"read\"/>\n", p.name, p.sig)
	}
	b.WriteString("  </interface>\n")
}

// standard are the interfaces every object has.
var standard = []*iface{
	{name: "org.freedesktop.DBus.Introspectable", methods: []method{{name: "Introspect", out: []arg{{"xml_data", "s"}}}}},
	{name: "org.freedesktop.DBus.Peer", methods: []method{{name: "Ping"}, {name: "GetMachineId", out: []arg{{"machine_uuid", "s"}}}}},
}

// propertiesIface is org.freedesktop.DBus.Properties, for objects with
// properties.
var propertiesIface = &iface{
	name: "org.freedesktop.DBus.Properties",
	methods: []method{
		{name: "Get", in: []arg{{"interface_name", "s"}, {"property_name", "s"}}, out: []arg{{"value", "v"}}},
		{name: "GetAll", in: []arg{{"interface_name", "s"}}, out: []arg{{"props", "a{sv}"}}},
		{name: "Set", in: []arg{{"interface_name", "s"}, {"property_name", "s"}, {"value", "v"}}},
	},
	signals: []signal{{name: "PropertiesChanged", args: []arg{{"interface_name", "s"}, {"changed_properties", "a{sv}"}, {"invalidated_properties", "as"}}}},
}

// export exports the interfaces at path with their Introspect data;
// extra are only described (their methods are exported elsewhere).
func export(conn *dbus.Conn, path dbus.ObjectPath, extra []*iface, fs ...*iface) error {
	var b strings.Builder
	b.WriteString(`<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<node>
`)
	for _, f := range fs {
		if err := conn.ExportMethodTable(f.table(), path, f.name); err != nil {
			return fmt.Errorf("daemon: export %s at %s: %w", f.name, path, err)
		}
		f.xml(&b)
	}
	for _, f := range append(extra, standard...) {
		f.xml(&b)
	}
	b.WriteString("</node>\n")
	xml := b.String()
	t := map[string]any{"Introspect": func() (string, *dbus.Error) { return xml, nil }}
	if err := conn.ExportMethodTable(t, path, "org.freedesktop.DBus.Introspectable"); err != nil {
		return fmt.Errorf("daemon: export introspection at %s: %w", path, err)
	}
	return nil
}

// props is org.freedesktop.DBus.Properties for one interface's read-only
// properties; set sends PropertiesChanged with the one property changed
// (the rauc CLI reads one per signal).
type props struct {
	conn  *dbus.Conn
	path  dbus.ObjectPath
	iface string
	mu    sync.Mutex
	vals  map[string]any
}

func exportProps(conn *dbus.Conn, path dbus.ObjectPath, iface string, vals map[string]any) (*props, error) {
	p := &props{conn: conn, path: path, iface: iface, vals: vals}
	t := map[string]any{
		"Get": func(i, name string) (dbus.Variant, *dbus.Error) {
			if i != p.iface {
				return dbus.Variant{}, invalidArgs("no interface %q here", i)
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			v, ok := p.vals[name]
			if !ok {
				return dbus.Variant{}, invalidArgs("no property %q", name)
			}
			return dbus.MakeVariant(v), nil
		},
		"GetAll": func(i string) (map[string]dbus.Variant, *dbus.Error) {
			if i != p.iface {
				return nil, invalidArgs("no interface %q here", i)
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			m := make(map[string]dbus.Variant, len(p.vals))
			for k, v := range p.vals {
				m[k] = dbus.MakeVariant(v)
			}
			return m, nil
		},
		"Set": func(i, name string, v dbus.Variant) *dbus.Error {
			return dbus.NewError("org.freedesktop.DBus.Error.PropertyReadOnly", []any{"property " + name + " is read-only"})
		},
	}
	if err := conn.ExportMethodTable(t, path, "org.freedesktop.DBus.Properties"); err != nil {
		return nil, fmt.Errorf("daemon: export properties at %s: %w", path, err)
	}
	return p, nil
}

func (p *props) get(name string) any {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.vals[name]
}

// set changes a property and announces it.
func (p *props) set(name string, v any) {
	p.mu.Lock()
	p.vals[name] = v
	// Emit under the lock: signals leave in the order of the changes.
	p.conn.Emit(p.path, "org.freedesktop.DBus.Properties.PropertiesChanged", p.iface, map[string]dbus.Variant{name: dbus.MakeVariant(v)}, []string{})
	p.mu.Unlock()
}
