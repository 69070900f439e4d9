package daemon

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/godbus/dbus/v5"
)

// RAUC's names.
const (
	RAUCName  = "de.pengutronix.rauc"
	RAUCIface = "de.pengutronix.rauc.Installer"
	RAUCPath  = dbus.ObjectPath("/")
)

// raucProgress is RAUC's Progress property: percentage, message, depth.
type raucProgress struct {
	Percent int32
	Message string
	Depth   int32
}

// raucSlot is one entry of GetSlotStatus.
type raucSlot struct {
	Name  string
	Props map[string]dbus.Variant
}

// rauc serves de.pengutronix.rauc.Installer.
type rauc struct {
	d     *Daemon
	conn  *dbus.Conn
	props *props
	mu    sync.Mutex
	last  raucProgress // last Progress sent, to send one per change
}

// raucSlotName maps a sysupdate slot (a, b, ...) to RAUC's rootfs.N.
func raucSlotName(slot string) string {
	if len(slot) == 1 && slot[0] >= 'a' && slot[0] <= 'z' {
		return "rootfs." + strconv.Itoa(int(slot[0]-'a'))
	}
	return "rootfs." + slot
}

// sysupdateSlot maps RAUC's identifiers (booted, other, rootfs.N, or a
// sysupdate slot name) to a sysupdate slot.
func sysupdateSlot(id string, st *Status) (string, error) {
	names := make([]string, 0, len(st.Slots))
	for _, s := range st.Slots {
		names = append(names, s.Name)
	}
	switch id {
	case "booted", "":
		if st.Booted == "" {
			return "", fmt.Errorf("cannot tell which slot is running: name a slot (%s)", raucNames(names))
		}
		return st.Booted, nil
	case "other":
		if st.Booted == "" {
			return "", fmt.Errorf("cannot tell which slot is running, so none is the other: name a slot (%s)", raucNames(names))
		}
		for _, n := range names {
			if n != st.Booted {
				return n, nil
			}
		}
		return "", fmt.Errorf("no slot besides the booted %s", raucSlotName(st.Booted))
	}
	for _, n := range names {
		if id == n || id == raucSlotName(n) {
			return n, nil
		}
	}
	return "", fmt.Errorf("no slot %q: use booted, other or one of %s", id, raucNames(names))
}

func raucNames(names []string) string {
	r := make([]string, len(names))
	for i, n := range names {
		r[i] = raucSlotName(n)
	}
	return strings.Join(r, ", ")
}

func (r *rauc) iface() *iface {
	return &iface{
		name: RAUCIface,
		methods: []method{
			{name: "Install", in: []arg{{"source", "s"}}, fn: r.install},
			{name: "InstallBundle", in: []arg{{"source", "s"}, {"args", "a{sv}"}}, fn: r.installBundle},
			{name: "Info", in: []arg{{"bundle", "s"}}, out: []arg{{"compatible", "s"}, {"version", "s"}}, fn: r.info},
			{name: "Mark", in: []arg{{"state", "s"}, {"slot_identifier", "s"}}, out: []arg{{"slot_name", "s"}, {"message", "s"}}, fn: r.mark},
			{name: "GetSlotStatus", out: []arg{{"slot_status_array", "a(sa{sv})"}}, fn: r.getSlotStatus},
			{name: "GetArtifactStatus", out: []arg{{"artifacts", "aa{sv}"}}, fn: r.getArtifactStatus},
			{name: "GetPrimary", out: []arg{{"primary", "s"}}, fn: r.getPrimary},
		},
		signals: []signal{{name: "Completed", args: []arg{{"result", "i"}}}},
		props: []property{
			{"Operation", "s"}, {"LastError", "s"}, {"Progress", "(isi)"},
			{"Compatible", "s"}, {"Variant", "s"}, {"BootSlot", "s"},
		},
	}
}

// exportRAUC exports the Installer with its properties.
func (d *Daemon) exportRAUC(conn *dbus.Conn, st *Status) (*rauc, error) {
	r := &rauc{d: d, conn: conn}
	p, err := exportProps(conn, RAUCPath, RAUCIface, map[string]any{
		"Operation":  "idle",
		"LastError":  "",
		"Progress":   raucProgress{},
		"Compatible": st.Model,
		"Variant":    d.cfg.Variant,
		"BootSlot":   st.Booted,
	})
	if err != nil {
		return nil, err
	}
	r.props = p
	if err := export(conn, RAUCPath, []*iface{propertiesIface}, r.iface()); err != nil {
		return nil, err
	}
	d.addListener(r)
	return r, nil
}

func (r *rauc) install(source string) *dbus.Error {
	return r.installBundle(source, nil)
}

func (r *rauc) installBundle(source string, args map[string]dbus.Variant) *dbus.Error {
	for k, v := range args {
		switch k {
		case "ignore-compatible":
			if b, ok := v.Value().(bool); !ok || b {
				return invalidArgs("ignore-compatible: sysupdate always checks that a release is for this model (%s) and has no way to skip it", r.props.get("Compatible"))
			}
		case "tls-cert", "tls-key", "tls-ca", "tls-no-verify", "http-headers":
			return invalidArgs("%s: sysupdate takes TLS settings from its configuration file (ca_bundle in sysupdate.conf), not per install", k)
		default:
			return invalidArgs("unknown install argument %q", k)
		}
	}
	if source == "" {
		return invalidArgs("no bundle given: pass a bundle file, a repository directory or URL")
	}
	if !strings.Contains(source, "://") && !filepath.IsAbs(source) {
		return invalidArgs("%q is a relative path: the daemon does not share the caller's directory, pass an absolute path", source)
	}
	return dbusError(r.d.start(r.d.installStep(ByRAUC, source, false)))
}

func (r *rauc) info(bundle string) (string, string, *dbus.Error) {
	in, ok := r.d.eng.(Inspector)
	if !ok {
		return "", "", dbus.NewError(ErrNameNotSupported, []any{"this engine cannot inspect a bundle without installing it"})
	}
	model, rel, err := in.Inspect(r.d.base, bundle)
	if err != nil {
		return "", "", dbusError(err)
	}
	return model, strconv.FormatUint(rel.Version, 10), nil
}

func (r *rauc) mark(state, id string) (string, string, *dbus.Error) {
	st, err := r.d.eng.Status(r.d.base)
	if err != nil {
		return "", "", dbusError(err)
	}
	slot, err := sysupdateSlot(id, st)
	if err != nil {
		return "", "", invalidArgs("%v", err)
	}
	name := raucSlotName(slot)
	var msg string
	err = r.d.runSync(&Op{Kind: KindMark, By: ByRAUC, Source: state + " " + name}, func(ctx context.Context) error {
		switch state {
		case "good":
			if slot != st.Booted {
				return fmt.Errorf("sysupdate confirms only the running slot %s, after its health checks: boot %s and mark it good there", raucSlotName(st.Booted), name)
			}
			msg = "marked slot " + name + " as good"
			return r.d.eng.MarkGood(ctx)
		case "bad":
			msg = "marked slot " + name + " as bad"
			return r.d.eng.MarkBad(ctx, slot)
		case "active":
			msg = "activated slot " + name
			return r.d.eng.SetNext(ctx, slot)
		}
		return fmt.Errorf("%w: unknown state %q: use good, bad or active", errInvalid, state)
	})
	if err != nil {
		if errors.Is(err, errInvalid) {
			return "", "", invalidArgs("%v", err)
		}
		return "", "", dbusError(err)
	}
	return name, msg, nil
}

var errInvalid = errors.New("invalid argument")

// slotState is RAUC's state of a slot: booted for the running one; with
// no slot known to run, active for the one the bootloader boots next;
// inactive otherwise.
func slotState(s Slot, st *Status) string {
	switch {
	case s.Name == st.Booted:
		return "booted"
	case st.Booted == "" && s.Name == st.Next:
		return "active"
	}
	return "inactive"
}

func (r *rauc) getSlotStatus() ([]raucSlot, *dbus.Error) {
	st, err := r.d.eng.Status(r.d.base)
	if err != nil {
		return nil, dbusError(err)
	}
	out := make([]raucSlot, 0, len(st.Slots))
	for _, s := range st.Slots {
		p := map[string]dbus.Variant{
			"class":    dbus.MakeVariant("rootfs"),
			"device":   dbus.MakeVariant(s.Device),
			"type":     dbus.MakeVariant("raw"),
			"bootname": dbus.MakeVariant(s.Name),
			"state":    dbus.MakeVariant(slotState(s, st)),
		}
		// RAUC's boot-status is the bootloader's view: good while the
		// slot may boot (confirmed or on trial), bad once it may not.
		if s.Bootable {
			p["boot-status"] = dbus.MakeVariant("good")
		} else {
			p["boot-status"] = dbus.MakeVariant("bad")
		}
		if s.Release != nil {
			p["bundle.compatible"] = dbus.MakeVariant(st.Model)
			p["bundle.version"] = dbus.MakeVariant(strconv.FormatUint(s.Release.Version, 10))
			if s.Release.Label != "" {
				p["bundle.description"] = dbus.MakeVariant(s.Release.Label)
			}
			p["status"] = dbus.MakeVariant("ok")
		}
		out = append(out, raucSlot{Name: raucSlotName(s.Name), Props: p})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// getArtifactStatus: sysupdate has no RAUC artifacts (1.13's
// repositories); an empty array is what newer CLIs need.
func (r *rauc) getArtifactStatus() ([]map[string]dbus.Variant, *dbus.Error) {
	return []map[string]dbus.Variant{}, nil
}

func (r *rauc) getPrimary() (string, *dbus.Error) {
	st, err := r.d.eng.Status(r.d.base)
	if err != nil {
		return "", dbusError(err)
	}
	if st.Next == "" {
		return "", dbus.NewError(ErrNameFailed, []any{"no slot is bootable"})
	}
	return raucSlotName(st.Next), nil
}

// setProgress sends Progress when it changes; one property per
// PropertiesChanged, as the rauc CLI reads only one.
func (r *rauc) setProgress(p raucProgress) {
	r.mu.Lock()
	same := p == r.last
	r.last = p
	r.mu.Unlock()
	if !same {
		r.props.set("Progress", p)
	}
}

// The listener: RAUC shows every install and download (Operation,
// Progress), and sends Completed for the installs it started.

func (r *rauc) started(op *Op) {
	if op.Kind != KindInstall && op.Kind != KindDownload {
		return
	}
	r.props.set("LastError", "")
	r.props.set("Operation", "installing")
	r.setProgress(raucProgress{0, "Installing", 1})
}

var phaseMessages = map[string]string{
	"check":    "Checking the update",
	"download": "Downloading and writing",
	"write":    "Writing the inactive slot",
	"verify":   "Verifying the written slot",
	"switch":   "Switching the bootloader",
}

func (r *rauc) event(op *Op, e Event) {
	if op.Kind != KindInstall && op.Kind != KindDownload {
		return
	}
	msg, ok := phaseMessages[e.Phase]
	if !ok {
		msg = "Installing"
	}
	pct := int32(op.Percent)
	if pct >= 100 {
		pct = 99 // 100 is "Installing done."
	}
	r.setProgress(raucProgress{pct, msg, 2})
}

func (r *rauc) finished(op *Op, res Result) {
	if op.Kind != KindInstall && op.Kind != KindDownload {
		return
	}
	code := int32(0)
	if res.Err != nil {
		code = 1
		r.props.set("LastError", res.Err.Error())
		r.setProgress(raucProgress{100, "Installing failed.", 1})
	} else {
		r.setProgress(raucProgress{100, "Installing done.", 1})
	}
	r.props.set("Operation", "idle")
	if op.By == ByRAUC {
		r.conn.Emit(RAUCPath, RAUCIface+".Completed", code)
	}
}
