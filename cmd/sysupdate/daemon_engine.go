//go:build !nodaemon

package main

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/sysupdate/sysupdate/config"
	"github.com/sysupdate/sysupdate/daemon"
	"github.com/sysupdate/sysupdate/updater"
)

// daemonEngine adapts updater.Engine to what package daemon needs.
type daemonEngine struct {
	opts updater.Options
	mu   sync.Mutex
	cfg  *config.Config
	e    *updater.Engine
}

func newDaemonEngine(cfg *config.Config, opts updater.Options) (*daemonEngine, error) {
	e, err := updater.New(cfg, opts)
	if err != nil {
		return nil, err
	}
	return &daemonEngine{opts: opts, cfg: cfg, e: e}, nil
}

func (d *daemonEngine) engine() (*updater.Engine, *config.Config) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.e, d.cfg
}

// busy makes the engine's ErrBusy (another sysupdate process holds the
// device lock) the daemon's, so both APIs answer with their busy error.
func busy(err error) error {
	if errors.Is(err, updater.ErrBusy) {
		return fmt.Errorf("%w: %w", daemon.ErrBusy, err)
	}
	return err
}

func observer(obs daemon.Observer) updater.Observer {
	if obs == nil {
		return nil
	}
	return func(e updater.Event) {
		obs(daemon.Event{Type: e.Type, Phase: e.Phase, Message: e.Message, Done: e.Done, Total: e.Total, Percent: e.Percent, ETA: e.ETA})
	}
}

func (d *daemonEngine) Check(ctx context.Context, obs daemon.Observer) (*daemon.CheckResult, error) {
	e, _ := d.engine()
	plan, err := e.Check(ctx, updater.Request{}, observer(obs))
	if err != nil {
		return nil, busy(err)
	}
	r := &daemon.CheckResult{Installed: daemon.Release{Version: plan.Installed}}
	if plan.Release != nil {
		r.Available = &daemon.Release{Version: plan.Release.Version, Label: plan.Release.Label}
		for _, img := range plan.Images {
			r.Size += img.Size
		}
	}
	return r, nil
}

func (d *daemonEngine) Install(ctx context.Context, req daemon.Request, obs daemon.Observer) (*daemon.InstallResult, error) {
	e, _ := d.engine()
	res, err := e.Install(ctx, updater.Request{Source: req.Source, NoSwitch: req.NoSwitch}, observer(obs))
	if err != nil {
		return nil, busy(err)
	}
	return &daemon.InstallResult{Release: daemon.Release{Version: res.Version, Label: res.Label}, Slot: res.Target, UpToDate: res.UpToDate, Switched: res.Switched}, nil
}

func (d *daemonEngine) Activate(ctx context.Context) error {
	e, _ := d.engine()
	return busy(e.Activate(ctx, nil))
}

func (d *daemonEngine) MarkGood(ctx context.Context) error {
	e, _ := d.engine()
	_, err := e.MarkGood(ctx, nil)
	return busy(err)
}

func (d *daemonEngine) MarkBad(ctx context.Context, slot string) error {
	e, _ := d.engine()
	return busy(e.MarkBad(ctx, slot))
}

func (d *daemonEngine) SetNext(ctx context.Context, slot string) error {
	e, _ := d.engine()
	return busy(e.SetNext(ctx, slot, 0))
}

func (d *daemonEngine) Status(ctx context.Context) (*daemon.Status, error) {
	e, cfg := d.engine()
	st, err := e.Status(ctx)
	if err != nil {
		return nil, err
	}
	r := &daemon.Status{Installed: daemon.Release{Version: st.Installed}, Booted: st.Active, Next: st.NextBoot, Model: cfg.Model, Channel: cfg.Channel}
	if p := st.Pending; p != nil && !p.Switched {
		r.Staged = &daemon.Release{Version: p.Version, Label: p.Label}
	}
	for _, s := range st.Slots {
		ds := daemon.Slot{Name: s.Name, Device: s.Devices["rootfs"], Bootable: s.Bootable, Good: s.Successful}
		if ds.Device == "" {
			for _, dev := range s.Devices {
				ds.Device = dev
				break
			}
		}
		if s.Version != 0 {
			ds.Release = &daemon.Release{Version: s.Version, Label: s.Label}
		}
		if s.Booted && s.Confirmed {
			r.Installed.Label = s.Label
			if rec := st.Records[s.Name]; rec != nil {
				r.LastUpdate = rec.Written
			}
		}
		r.Slots = append(r.Slots, ds)
	}
	return r, nil
}

// Inspect reads a bundle's release by checking it (the device lock is
// taken briefly; nothing but accepted metadata is written).
func (d *daemonEngine) Inspect(ctx context.Context, source string) (string, *daemon.Release, error) {
	e, cfg := d.engine()
	plan, err := e.Check(ctx, updater.Request{Source: source}, nil)
	if err != nil {
		return "", nil, busy(err)
	}
	if plan.Release == nil {
		return cfg.Model, &daemon.Release{Version: plan.Installed}, nil
	}
	return cfg.Model, &daemon.Release{Version: plan.Release.Version, Label: plan.Release.Label}, nil
}

// SetChannel follows another channel until the daemon exits.
func (d *daemonEngine) SetChannel(ch string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := *d.cfg
	c.Channel = ch
	e, err := updater.New(&c, d.opts)
	if err != nil {
		return err
	}
	d.cfg, d.e = &c, e
	return nil
}
