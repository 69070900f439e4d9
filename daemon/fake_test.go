package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// fakeEngine is an Engine in memory: two slots a and b, a repository
// offering one release, installs that take steps progress events long.
type fakeEngine struct {
	mu        sync.Mutex
	st        Status
	available *Release
	steps     int           // progress events per install
	stepDelay time.Duration // between them
	failWith  error         // the next install fails with it
	gate      chan struct{} // if set, installs wait on it before writing
	calls     []string
	done      int // bytes written so far into the target (resume)
	lastCtx   context.Context
}

func newFakeEngine() *fakeEngine {
	return &fakeEngine{
		st: Status{
			Installed: Release{Version: 1, Label: "first"},
			Booted:    "a", Next: "a",
			Slots: []Slot{
				{Name: "a", Device: "/dev/disk/by-partlabel/rootfs_a", Bootable: true, Good: true, Release: &Release{Version: 1, Label: "first"}},
				{Name: "b", Device: "/dev/disk/by-partlabel/rootfs_b", Bootable: false},
			},
			Model: "board", Channel: "stable",
		},
		available: &Release{Version: 2, Label: "second"},
		steps:     10,
		stepDelay: 10 * time.Millisecond,
	}
}

func (f *fakeEngine) call(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}

func (f *fakeEngine) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeEngine) slot(name string) *Slot {
	for i := range f.st.Slots {
		if f.st.Slots[i].Name == name {
			return &f.st.Slots[i]
		}
	}
	return nil
}

func (f *fakeEngine) Check(ctx context.Context, obs Observer) (*CheckResult, error) {
	f.call("check")
	f.mu.Lock()
	defer f.mu.Unlock()
	r := &CheckResult{Installed: f.st.Installed}
	if f.available != nil && f.available.Version > f.st.Installed.Version {
		a := *f.available
		r.Available, r.Size = &a, 12345
	}
	return r, nil
}

func (f *fakeEngine) Install(ctx context.Context, req Request, obs Observer) (*InstallResult, error) {
	f.call(fmt.Sprintf("install %s noswitch=%v", req.Source, req.NoSwitch))
	f.mu.Lock()
	f.lastCtx = ctx
	gate, fail := f.gate, f.failWith
	f.failWith = nil
	rel := f.available
	f.mu.Unlock()
	if rel == nil {
		return &InstallResult{UpToDate: true}, nil
	}
	target := f.slot("b")
	f.mu.Lock()
	target.Bootable, target.Good, target.Release = false, false, nil
	f.mu.Unlock()
	obs(Event{Type: "phase", Phase: "download"})
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	const total = 1000
	for {
		f.mu.Lock()
		done := f.done
		f.mu.Unlock()
		if done >= total {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("write slot b at offset %d: %w", done, ctx.Err())
		case <-time.After(f.stepDelay):
		}
		done += total / f.steps
		f.mu.Lock()
		f.done = done
		f.mu.Unlock()
		obs(Event{Type: "progress", Phase: "write", Done: int64(done), Total: total, Percent: done * 100 / total, ETA: time.Duration(total-done) * time.Millisecond})
		if fail != nil && done >= total/2 {
			f.mu.Lock()
			f.done = 0
			f.mu.Unlock()
			return nil, fail
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.done = 0
	r := *rel
	target.Release = &r
	if req.NoSwitch {
		f.st.Staged = &r
		return &InstallResult{Release: r, Slot: "b"}, nil
	}
	target.Bootable, f.st.Next = true, "b"
	return &InstallResult{Release: r, Slot: "b", Switched: true}, nil
}

func (f *fakeEngine) Activate(ctx context.Context) error {
	f.call("activate")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.st.Staged == nil {
		return errors.New("nothing staged")
	}
	f.slot("b").Bootable, f.st.Next, f.st.Staged = true, "b", nil
	return nil
}

func (f *fakeEngine) MarkGood(ctx context.Context) error {
	f.call("mark-good")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.slot(f.st.Booted).Good = true
	return nil
}

func (f *fakeEngine) MarkBad(ctx context.Context, slot string) error {
	f.call("mark-bad " + slot)
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.slot(slot)
	s.Bootable, s.Good = false, false
	if f.st.Next == slot {
		f.st.Next = ""
		for _, o := range f.st.Slots {
			if o.Bootable {
				f.st.Next = o.Name
			}
		}
	}
	return nil
}

func (f *fakeEngine) SetNext(ctx context.Context, slot string) error {
	f.call("set-next " + slot)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.slot(slot).Bootable, f.st.Next = true, slot
	return nil
}

func (f *fakeEngine) Status(ctx context.Context) (*Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.st
	st.Slots = nil
	for _, s := range f.st.Slots {
		if s.Release != nil {
			r := *s.Release
			s.Release = &r
		}
		st.Slots = append(st.Slots, s)
	}
	return &st, nil
}

func (f *fakeEngine) SetChannel(ch string) error {
	f.call("channel " + ch)
	f.mu.Lock()
	f.st.Channel = ch
	f.mu.Unlock()
	return nil
}
