// Package daemon is sysupdate's long-running service: it owns the D-Bus
// names of two updater APIs that existing clients speak (RAUC's
// de.pengutronix.rauc.Installer and Ubuntu system-image's
// com.ubports.SystemImage / com.canonical.SystemImage) plus a small one of
// its own, runs at most one operation at a time for all of them, checks
// for updates periodically and follows a policy: check only, stage
// (download into the inactive slot and wait for the user to apply) or
// install (switch and wait for the user to reboot).
//
// The daemon does no sequencing of its own: every operation is one call
// of an Engine (package updater behind an adapter). What is durable when
// an operation ends is what the engine made durable; cancelling an
// operation (SIGTERM, PauseDownload, CancelUpdate) cancels the engine's
// context, and the next install resumes from the engine's checkpoint.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// Policy is what a periodic check does when an update is available.
type Policy string

// The policies.
const (
	// PolicyCheck only reports (system-image UpdateAvailableStatus).
	PolicyCheck Policy = "check"
	// PolicyDownload stages the update: written into the inactive slot
	// and verified, not switched to; ApplyUpdate or `rauc status
	// mark-active other` switches.
	PolicyDownload Policy = "download"
	// PolicyInstall installs and switches; the new slot boots at the
	// next reboot, which is left to the user (ApplyUpdate reboots).
	PolicyInstall Policy = "install"
)

// ParsePolicy checks a policy name.
func ParsePolicy(s string) (Policy, error) {
	switch p := Policy(s); p {
	case PolicyCheck, PolicyDownload, PolicyInstall:
		return p, nil
	}
	return "", fmt.Errorf("daemon: unknown policy %q: use check, download or install", s)
}

// Config configures a Daemon.
type Config struct {
	// Policy applies to periodic checks and CheckNow.
	Policy Policy
	// Interval between periodic checks; 0 disables them (a systemd timer
	// calls CheckNow instead). Each wait adds a random delay of up to
	// RandomDelay so that a fleet does not check at the same second.
	Interval, RandomDelay time.Duration
	// Variant is RAUC's Variant property.
	Variant string
	// Channels are the channels system-image's GetChannels offers and
	// SetChannel accepts; the device's own channel is always included.
	Channels []string
	// SettingsPath is the file system-image's settings persist in; ""
	// keeps them in memory.
	SettingsPath string
	// Reboot reboots the device (ApplyUpdate); nil refuses to.
	Reboot func() error
	// Logf logs; nil discards.
	Logf func(format string, a ...any)
	// StopTimeout bounds how long Run waits for a cancelled operation
	// on shutdown; default 4 s.
	StopTimeout time.Duration
}

// Kind is what an operation does.
type Kind string

// The operation kinds.
const (
	KindCheck    Kind = "check"
	KindDownload Kind = "download" // Install with NoSwitch
	KindInstall  Kind = "install"
	KindActivate Kind = "activate"
	KindMark     Kind = "mark"
)

// The clients that start operations.
const (
	ByRAUC        = "rauc"
	BySystemImage = "system-image"
	ByTimer       = "timer"
)

// Op is one running operation.
type Op struct {
	Kind Kind
	// By names who asked: ByRAUC, BySystemImage or ByTimer.
	By     string
	Source string
	// Percent is the last progress percentage seen (0..100).
	Percent int
	// Next is the kind of operation that follows this one in the same
	// chain ("" for none): a check that goes on to download says so in
	// its UpdateAvailableStatus.
	Next Kind
}

// String says what runs and who asked, for busy errors and logs.
func (o *Op) String() string {
	return fmt.Sprintf("%s (asked by %s)", o.Kind, o.By)
}

// Result is how an operation ended.
type Result struct {
	Check   *CheckResult
	Install *InstallResult
	Err     error
}

// The causes an operation's context is cancelled with.
var (
	errPaused   = errors.New("download paused")
	errCanceled = errors.New("Canceled") // system-image's reason string
	errShutdown = errors.New("the daemon is stopping; the next install resumes where this one stopped")
)

// listener is a front end that reports operations to its clients.
type listener interface {
	started(op *Op)
	event(op *Op, e Event)
	finished(op *Op, r Result)
}

// step is one operation of a chain that holds the daemon's one slot:
// a check that goes on to download, for instance.
type step struct {
	op   *Op
	run  func(ctx context.Context, obs Observer) Result
	next func(Result) *step
}

// Daemon runs operations for the D-Bus front ends. Its methods are safe
// for concurrent use.
type Daemon struct {
	eng Engine
	cfg Config

	mu          sync.Mutex
	cur         *Op
	cancel      context.CancelCauseFunc
	done        chan struct{} // closed when the current chain ends
	base        context.Context
	stop        context.CancelFunc
	listeners   []listener
	lastCheck   *CheckResult
	lastCheckAt time.Time

	settings *settings
	exit     chan struct{}
	// chains counts running chains, including their last signals.
	chains sync.WaitGroup
}

// New returns a Daemon; Run serves it on a bus.
func New(eng Engine, cfg Config) (*Daemon, error) {
	if cfg.Policy == "" {
		cfg.Policy = PolicyCheck
	}
	if _, err := ParsePolicy(string(cfg.Policy)); err != nil {
		return nil, err
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 4 * time.Second
	}
	s, err := loadSettings(cfg.SettingsPath)
	if err != nil {
		return nil, err
	}
	base, stop := context.WithCancel(context.Background())
	d := &Daemon{eng: eng, cfg: cfg, base: base, stop: stop, settings: s}
	if ch := s.get("channel"); ch != "" {
		if cs, ok := eng.(ChannelSetter); ok {
			if err := cs.SetChannel(ch); err != nil {
				return nil, fmt.Errorf("daemon: channel %q from %s: %w", ch, cfg.SettingsPath, err)
			}
		}
	}
	return d, nil
}

func (d *Daemon) addListener(l listener) {
	d.mu.Lock()
	d.listeners = append(d.listeners, l)
	d.mu.Unlock()
}

// busyError says what runs; it wraps ErrBusy.
func busyError(cur *Op) error {
	return fmt.Errorf("%w: %s; try again when it has finished", ErrBusy, cur)
}

// Current returns a copy of the running operation, or nil.
func (d *Daemon) Current() *Op {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur == nil {
		return nil
	}
	c := *d.cur
	return &c
}

// start runs a chain of steps in the background, or fails at once with
// an error wrapping ErrBusy when an operation runs.
func (d *Daemon) start(s *step) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur != nil {
		return busyError(d.cur)
	}
	if d.base.Err() != nil {
		return errShutdown
	}
	ctx, cancel := context.WithCancelCause(d.base)
	d.cur, d.cancel, d.done = s.op, cancel, make(chan struct{})
	d.chains.Add(1)
	go d.runChain(ctx, s)
	return nil
}

func (d *Daemon) runChain(ctx context.Context, s *step) {
	defer d.chains.Done()
	d.mu.Lock()
	cancel := d.cancel
	d.mu.Unlock()
	for s != nil {
		d.mu.Lock()
		d.cur = s.op
		ls := slices.Clone(d.listeners)
		d.mu.Unlock()
		op := s.op
		d.cfg.Logf("daemon: %s started", op)
		for _, l := range ls {
			l.started(op)
		}
		obs := func(e Event) {
			d.mu.Lock()
			if e.Percent > op.Percent {
				op.Percent = e.Percent
			}
			d.mu.Unlock()
			for _, l := range ls {
				l.event(op, e)
			}
		}
		r := s.run(ctx, obs)
		if r.Err != nil {
			if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
				r.Err = fmt.Errorf("%w (%v)", cause, r.Err)
			}
			d.cfg.Logf("daemon: %s failed: %v", op, r.Err)
		} else {
			d.cfg.Logf("daemon: %s done", op)
		}
		var next *step
		if s.next != nil && r.Err == nil && ctx.Err() == nil {
			next = s.next(r)
		}
		d.mu.Lock()
		if r.Check != nil {
			d.lastCheck, d.lastCheckAt = r.Check, time.Now()
		}
		if next != nil {
			op.Next = next.op.Kind
		} else {
			// The last step: free the slot before telling the clients,
			// so that one reacting to the signal (DownloadUpdate after
			// UpdateAvailableStatus) is not refused as busy.
			cancel(nil)
			close(d.done)
			d.cur, d.cancel, d.done = nil, nil, nil
		}
		d.mu.Unlock()
		for _, l := range ls {
			l.finished(op, r)
		}
		s = next
	}
}

// runSync runs a short operation (Mark, Activate) in the caller's
// goroutine under the same one-at-a-time rule.
func (d *Daemon) runSync(op *Op, fn func(ctx context.Context) error) error {
	d.mu.Lock()
	if d.cur != nil {
		defer d.mu.Unlock()
		return busyError(d.cur)
	}
	ctx, cancel := context.WithCancelCause(d.base)
	done := make(chan struct{})
	d.cur, d.cancel, d.done = op, cancel, done
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		cancel(nil)
		close(done)
		d.cur, d.cancel, d.done = nil, nil, nil
		d.mu.Unlock()
	}()
	d.cfg.Logf("daemon: %s", op)
	return fn(ctx)
}

// cancelCurrent cancels the running operation if it is of one of kinds,
// with cause; it reports the operation cancelled, nil if none.
func (d *Daemon) cancelCurrent(cause error, kinds ...Kind) *Op {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur == nil || !slices.Contains(kinds, d.cur.Kind) {
		return nil
	}
	d.cancel(cause)
	return d.cur
}

// wait waits for the running operation to end and its clients to be
// told, at most timeout; it reports whether it did.
func (d *Daemon) wait(timeout time.Duration) bool {
	d.mu.Lock()
	done := d.done
	d.mu.Unlock()
	all := make(chan struct{})
	go func() {
		if done != nil {
			<-done
		}
		d.chains.Wait()
		close(all)
	}()
	select {
	case <-all:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Shutdown cancels the running operation and waits for it, at most
// Config.StopTimeout; no operation starts afterwards.
func (d *Daemon) Shutdown() error {
	d.mu.Lock()
	if d.cancel != nil {
		d.cancel(errShutdown)
	}
	d.stop()
	d.mu.Unlock()
	if !d.wait(d.cfg.StopTimeout) {
		return fmt.Errorf("daemon: the running operation did not stop within %v", d.cfg.StopTimeout)
	}
	return nil
}

// checkStep is a check by who, followed by next.
func (d *Daemon) checkStep(by string, next func(Result) *step) *step {
	return &step{
		op: &Op{Kind: KindCheck, By: by},
		run: func(ctx context.Context, obs Observer) Result {
			c, err := d.eng.Check(ctx, obs)
			return Result{Check: c, Err: err}
		},
		next: next,
	}
}

// installStep installs from source; noSwitch stages.
func (d *Daemon) installStep(by, source string, noSwitch bool) *step {
	k := KindInstall
	if noSwitch {
		k = KindDownload
	}
	return &step{
		op: &Op{Kind: k, By: by, Source: source},
		run: func(ctx context.Context, obs Observer) Result {
			r, err := d.eng.Install(ctx, Request{Source: source, NoSwitch: noSwitch}, obs)
			return Result{Install: r, Err: err}
		},
	}
}

// CheckNow runs one policy cycle: a check, then what the policy says.
// It returns at once; it fails with ErrBusy when an operation runs.
func (d *Daemon) CheckNow(by string) error {
	return d.start(d.checkStep(by, func(r Result) *step {
		if r.Check == nil || r.Check.Available == nil {
			return nil
		}
		switch d.cfg.Policy {
		case PolicyDownload:
			return d.installStep(by, "", true)
		case PolicyInstall:
			return d.installStep(by, "", false)
		}
		return nil
	}))
}

// periodic runs CheckNow every Interval plus a random delay until ctx ends.
func (d *Daemon) periodic(ctx context.Context) {
	if d.cfg.Interval <= 0 {
		return
	}
	for {
		wait := d.cfg.Interval
		if d.cfg.RandomDelay > 0 {
			wait += rand.N(d.cfg.RandomDelay)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := d.CheckNow(ByTimer); err != nil {
			d.cfg.Logf("daemon: periodic check skipped: %v", err)
		}
	}
}

// lastCheckResult returns the last check's result and time.
func (d *Daemon) lastCheckResult() (*CheckResult, time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastCheck, d.lastCheckAt
}
