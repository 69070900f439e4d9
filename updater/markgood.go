package updater

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/sysupdate/sysupdate/atomicfile"
	"github.com/sysupdate/sysupdate/bootloaders"
	"github.com/sysupdate/sysupdate/client"
	"github.com/sysupdate/sysupdate/config"
	"github.com/sysupdate/sysupdate/fetch"
)

// MarkGoodResult says what MarkGood did.
type MarkGoodResult struct {
	Slot    string `json:"slot"`
	How     string `json:"how"`
	Version uint64 `json:"version"`
	Label   string `json:"label,omitempty"`
	// Promoted: the slot ran a pending update, now the installed version.
	Promoted bool `json:"promoted"`
	// Checks are the health checks that ran, in order.
	Checks []string `json:"checks"`
	// StateProblem says what was wrong with the state file, if anything
	// (the slot is confirmed all the same).
	StateProblem string `json:"state_problem,omitempty"`
}

// MarkGood confirms the running slot: it runs the health checks (every
// executable in the configured health directory, in name order, each
// with the configured timeout); if all pass, the bootloader's MarkGood,
// then the state records the version. If one fails, nothing is confirmed
// and, per health_failure, the slot stays on trial (the bootloader falls
// back when its tries run out), is marked bad (the other slot boots next),
// or is marked bad and the device reboots now. The failure is recorded
// for Status. A broken state file does not stop the confirmation: it is
// set aside and rebuilt, and the result says so.
func (e *Engine) MarkGood(ctx context.Context, obs Observer) (*MarkGoodResult, error) {
	unlock, err := e.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	m := &emitter{obs: obs, now: e.now}
	active, how, err := e.Active()
	if err != nil {
		return nil, err
	}
	be, err := e.Bootloader()
	if err != nil {
		return nil, err
	}
	res, err := e.markGood(ctx, be, active, m)
	if res != nil {
		res.How = how
	}
	if err != nil {
		m.emit(Event{Type: EventError, Err: err.Error()})
		return res, err
	}
	m.emit(Event{Type: EventDone, Percent: 100, Message: fmt.Sprintf("slot %s confirmed, version %d", active, res.Version)})
	return res, nil
}

func (e *Engine) markGood(ctx context.Context, be bootloaders.Backend, active string, m *emitter) (*MarkGoodResult, error) {
	res := &MarkGoodResult{Slot: active}
	state, problem := e.loadStateForRepair()
	res.StateProblem = problem
	if problem != "" {
		m.message("%s", problem)
	}
	m.phase(PhaseHealth, "", "running health checks in %s", e.cfg.HealthDir)
	checks, err := e.runHealth(ctx, m)
	res.Checks = checks
	if err != nil {
		var hf *healthFailure
		if !errors.As(err, &hf) {
			return res, err
		}
		version := uint64(0)
		if p := state.Pending; p != nil && p.Slot == active {
			version = p.Version
		}
		state.Health = &client.HealthReport{Slot: active, Version: version, Check: hf.check, Output: hf.output, Error: hf.err.Error(), Time: e.now().UTC(), Action: e.cfg.HealthFailure}
		if serr := state.Save(e.cfg.State); serr != nil {
			m.message("could not record the failed check: %v", serr)
		}
		msg := fmt.Sprintf("slot %s is NOT confirmed", active)
		switch e.cfg.HealthFailure {
		case config.HealthMarkBad, config.HealthReboot:
			if err := be.MarkBad(active); err != nil {
				return res, fmt.Errorf("%w: %w; marking slot %s bad also failed: %w", ErrHealth, hf, active, err)
			}
			msg += "; it is marked bad and the other slot boots next"
			if e.cfg.HealthFailure == config.HealthReboot {
				m.phase(PhaseReboot, "", "rebooting into the other slot")
				if err := e.reboot(ctx); err != nil {
					return res, fmt.Errorf("%w: %w; %s, but reboot failed: %w", ErrHealth, hf, msg, err)
				}
			}
		default:
			msg += "; it stays on trial and the bootloader falls back when its tries run out"
		}
		return res, fmt.Errorf("%w: %w; %s", ErrHealth, hf, msg)
	}
	// Bootloader first, then the state: a power cut in between leaves a
	// confirmed slot with a pending record, which the next mark-good (every
	// boot runs it) completes.
	m.phase(PhaseConfirm, "", "confirming slot %s", active)
	if err := be.MarkGood(active); err != nil {
		return res, fmt.Errorf("mark slot %s good: %w", active, err)
	}
	if state.Slots == nil {
		state.Slots = map[string]*client.SlotRecord{}
	}
	if p := state.Pending; p != nil && p.Slot == active {
		state.Installed, state.Pending = p.Version, nil
		res.Promoted, res.Label = true, p.Label
		state.Slots[active] = &client.SlotRecord{Version: p.Version, Label: p.Label, Written: e.now().UTC()}
	}
	rec := state.Slots[active]
	if rec == nil {
		rec = &client.SlotRecord{Version: state.Installed, Written: e.now().UTC()}
		state.Slots[active] = rec
	}
	// A slot booted by hand (rollback) runs the release recorded for it.
	state.Installed = rec.Version
	rec.Confirmed = true
	res.Label = rec.Label
	state.Health = nil
	res.Version = state.Installed
	if err := state.Save(e.cfg.State); err != nil {
		return res, fmt.Errorf("slot %s is confirmed in the bootloader, but recording version %d failed: %w; run mark-good again", active, state.Installed, err)
	}
	return res, nil
}

// loadStateForRepair loads the state file; a broken one is moved aside
// (STATE.broken) and replaced by an empty state, and the problem is
// returned in words. Replay protection then restarts from the next check.
func (e *Engine) loadStateForRepair() (*client.State, string) {
	s, err := client.LoadState(e.cfg.State)
	if err == nil {
		return s, ""
	}
	aside := e.cfg.State + ".broken"
	b, _ := os.ReadFile(e.cfg.State)
	if werr := atomicfile.WriteFile(aside, b, 0o600); werr == nil {
		os.Remove(e.cfg.State)
	}
	return &client.State{Schema: 1}, fmt.Sprintf("the state file is unusable (%v); it was moved to %s and a new one started: the installed version is unknown until the next update, and metadata replay protection restarts from the next check", err, aside)
}

// healthFailure is a failed health check.
type healthFailure struct {
	check, output string
	err           error
}

func (h *healthFailure) Error() string {
	out := ""
	if h.output != "" {
		out = "; its last output: " + strings.ReplaceAll(h.output, "\n", " | ")
	}
	return fmt.Sprintf("health check %s: %v%s", h.check, h.err, out)
}

func (h *healthFailure) Unwrap() error { return h.err }

// runHealth runs every executable regular file of the health directory in
// name order; a missing directory is no checks.
func (e *Engine) runHealth(ctx context.Context, m *emitter) ([]string, error) {
	ents, err := os.ReadDir(e.cfg.HealthDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("updater: health checks: %w", err)
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	var ran []string
	for _, de := range ents {
		p := filepath.Join(e.cfg.HealthDir, de.Name())
		st, err := os.Stat(p)
		if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 || strings.HasPrefix(de.Name(), ".") {
			continue
		}
		ran = append(ran, de.Name())
		m.message("health check %s", de.Name())
		cctx, cancel := context.WithTimeout(ctx, e.cfg.HealthTimeout)
		cmd := exec.CommandContext(cctx, p)
		var out tailBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.WaitDelay = time.Second
		err = cmd.Run()
		timedOut := cctx.Err() == context.DeadlineExceeded
		cancel()
		if ctx.Err() != nil {
			return ran, ctx.Err()
		}
		if timedOut {
			err = fmt.Errorf("did not finish within %v", e.cfg.HealthTimeout)
		}
		if err != nil {
			return ran, &healthFailure{check: de.Name(), output: out.lastLines(5), err: err}
		}
	}
	return ran, nil
}

// tailBuffer keeps the last 4 KiB written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = t.b[len(t.b)-4096:]
	}
	return len(p), nil
}

func (t *tailBuffer) lastLines(n int) string {
	lines := strings.Split(strings.TrimRight(string(bytes.ToValidUTF8(t.b, []byte("?"))), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// MarkBad makes slot unbootable from the next boot on.
func (e *Engine) MarkBad(ctx context.Context, slot string) error {
	return e.BootloaderOp(func(be bootloaders.Backend) error { return be.MarkBad(slot) })
}

// SetNext makes the next boot try slot (the configured tries). It is the
// raw bootloader operation (`bootloader set-next`, rauc mark-active); see
// Rollback for the checked one.
func (e *Engine) SetNext(ctx context.Context, slot string, tries int) error {
	if tries == 0 {
		tries = e.cfg.Tries
	}
	return e.BootloaderOp(func(be bootloaders.Backend) error { return be.SetNext(slot, tries) })
}

// BootloaderOp runs fn on the bootloader backend under the device lock,
// for `sysupdate bootloader`.
func (e *Engine) BootloaderOp(fn func(bootloaders.Backend) error) error {
	unlock, err := e.lock()
	if err != nil {
		return err
	}
	defer unlock()
	be, err := e.Bootloader()
	if err != nil {
		return err
	}
	return fn(be)
}

func nowFunc(f func() time.Time) func() time.Time {
	if f != nil {
		return f
	}
	return time.Now
}

// redactSource drops a password from a URL source for messages.
func redactSource(s string) string { return fetch.Redact(s) }
