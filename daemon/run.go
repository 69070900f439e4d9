package daemon

import (
	"context"
	"errors"
	"fmt"

	"github.com/godbus/dbus/v5"
)

// sysupdate's own names: one method for a systemd timer to start a
// policy cycle (busctl call ... CheckNow).
const (
	Name  = "io.github.sysupdate.Daemon"
	Iface = "io.github.sysupdate.Daemon"
	Path  = dbus.ObjectPath("/io/github/sysupdate/Daemon")
)

// Names are the bus names Run owns.
var Names = []string{Name, RAUCName, SystemImageName, SystemImageLegacyName}

func (d *Daemon) ownIface() *iface {
	return &iface{
		name: Iface,
		methods: []method{
			{name: "CheckNow", fn: func() *dbus.Error { return dbusError(d.CheckNow(ByTimer)) }},
		},
	}
}

// requestExit makes Run return (system-image's Exit).
func (d *Daemon) requestExit() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.exit != nil {
		select {
		case d.exit <- struct{}{}:
		default:
		}
	}
}

// Run exports the APIs on conn, owns the bus names and serves until ctx
// ends (SIGTERM), Exit is called or the bus connection is lost. On the
// way out it cancels the running operation, waits for it at most
// Config.StopTimeout and releases the names. A name another process owns
// is an error: Run never queues for a name.
func (d *Daemon) Run(ctx context.Context, conn *dbus.Conn) error {
	st, err := d.eng.Status(ctx)
	if err != nil {
		return fmt.Errorf("daemon: read the device status: %w", err)
	}
	d.mu.Lock()
	d.exit = make(chan struct{}, 1)
	d.mu.Unlock()
	if _, err := d.exportRAUC(conn, st); err != nil {
		return err
	}
	if _, err := d.exportSystemImage(conn, st); err != nil {
		return err
	}
	if err := export(conn, Path, nil, d.ownIface()); err != nil {
		return err
	}
	var owned []string
	defer func() {
		for _, n := range owned {
			conn.ReleaseName(n)
		}
	}()
	for _, n := range Names {
		r, err := conn.RequestName(n, dbus.NameFlagDoNotQueue)
		if err != nil {
			return fmt.Errorf("daemon: request bus name %s: %w", n, err)
		}
		if r != dbus.RequestNameReplyPrimaryOwner && r != dbus.RequestNameReplyAlreadyOwner {
			return fmt.Errorf("daemon: bus name %s is owned by another process (another sysupdate daemon, or rauc's own service?): stop it first", n)
		}
		owned = append(owned, n)
	}
	d.cfg.Logf("daemon: serving %v (policy %s)", Names, d.cfg.Policy)
	pctx, stopPeriodic := context.WithCancel(ctx)
	defer stopPeriodic()
	go d.periodic(pctx)

	var reason error
	select {
	case <-ctx.Done():
	case <-d.exit:
	case <-conn.Context().Done():
		reason = errors.New("daemon: the bus connection was closed")
	}
	stopPeriodic()
	if err := d.Shutdown(); err != nil {
		return err
	}
	return reason
}
