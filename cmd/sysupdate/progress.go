package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/sysupdate/sysupdate/updater"
)

// renderer is the one way device commands show an operation's events:
// JSON lines (--json-events) for updater UIs; else messages as lines on
// log and progress on progress: a bar with rate and ETA rewritten in place
// on a terminal, one line per 10 % otherwise (journald, serial consoles).
type renderer struct {
	mu       sync.Mutex
	log      io.Writer // messages
	progress io.Writer // progress
	tty      bool
	jsonOut  io.Writer // --json-events: every event here, nothing else
	decile   map[string]int
	barOpen  bool
}

func newRenderer(log, progress io.Writer, jsonEvents bool, jsonOut io.Writer) *renderer {
	r := &renderer{log: log, progress: progress, tty: isTerminal(progress), decile: map[string]int{}}
	if jsonEvents {
		r.jsonOut = jsonOut
	}
	return r
}

func (r *renderer) event(ev updater.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.jsonOut != nil {
		b, err := json.Marshal(ev)
		if err == nil {
			r.jsonOut.Write(append(b, '\n'))
		}
		return
	}
	switch ev.Type {
	case updater.EventProgress:
		r.showProgress(ev)
	case updater.EventPhase:
		if ev.Message != "" {
			r.line(r.log, ev.Message)
		}
	case updater.EventRetry:
		r.line(r.progress, "network: "+ev.Message)
	case updater.EventResume, updater.EventMessage, updater.EventDone, updater.EventSource:
		if ev.Message != "" {
			r.line(r.log, ev.Message)
		}
	case updater.EventError:
		r.closeBar()
	}
}

// line prints a message on its own line, ending an open progress bar.
func (r *renderer) line(w io.Writer, s string) {
	r.closeBar()
	fmt.Fprintln(w, s)
}

func (r *renderer) closeBar() {
	if r.barOpen {
		fmt.Fprintln(r.progress)
		r.barOpen = false
	}
}

func (r *renderer) showProgress(ev updater.Event) {
	if ev.Total <= 0 {
		return
	}
	pct := int(ev.Done * 100 / ev.Total)
	rate, eta := "", ""
	if ev.Rate > 0 {
		rate = ", " + human(int64(ev.Rate)) + "/s"
		eta = ", ETA " + ev.ETA.Round(time.Second).String()
	}
	if ev.Source != "" { // mirrors configured: say which source is in use
		eta += ", from " + ev.Source
	}
	if r.tty {
		const width = 30
		fill := pct * width / 100
		fmt.Fprintf(r.progress, "\r\033[K%s [%s%s] %3d%% %s/%s%s%s", ev.Image, strings.Repeat("#", fill), strings.Repeat("-", width-fill), pct, human(ev.Done), human(ev.Total), rate, eta)
		r.barOpen = true
		if ev.Done == ev.Total {
			r.closeBar()
		}
		return
	}
	d := pct / 10
	if last, ok := r.decile[ev.Image]; ok && d <= last {
		return
	}
	r.decile[ev.Image] = d
	fmt.Fprintf(r.progress, "%s: %d%% %d/%d bytes%s%s\n", ev.Image, d*10, ev.Done, ev.Total, rate, eta)
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
