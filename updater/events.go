package updater

import (
	"fmt"
	"time"

	"github.com/sysupdate/sysupdate/client"
)

// Event types.
const (
	EventPhase    = "phase"    // a step begins (Phase says which)
	EventProgress = "progress" // bytes of the current image written
	EventRetry    = "retry"    // a fetch failed and is retried or resumed
	EventResume   = "resume"   // an install continues from a checkpoint
	EventSource   = "source"   // a stream source (mirror or repository) is used, or abandoned (Err says why)
	EventMessage  = "message"  // something worth telling the user
	EventDone     = "done"     // the operation finished
	EventError    = "error"    // the operation failed (Err says why)
)

// Phases.
const (
	PhaseCheck    = "check"
	PhaseOpen     = "open"
	PhaseDownload = "download" // fetch and write one image
	PhaseVerify   = "verify"   // read the slot back
	PhaseRecord   = "record"
	PhaseSwitch   = "switch"
	PhaseHealth   = "health"
	PhaseConfirm  = "confirm"
	PhaseReboot   = "reboot"
)

// Event is one report of an operation in progress. Its JSON form is what
// `sysupdate ... --json-events` writes, one object per line
// (docs/updating.md).
type Event struct {
	Time  time.Time `json:"time"`
	Type  string    `json:"type"`
	Phase string    `json:"phase,omitempty"`
	Image string    `json:"image,omitempty"`
	// Done and Total are bytes of the image's target written so far and
	// in all (progress events).
	Done  int64 `json:"done,omitempty"`
	Total int64 `json:"total,omitempty"`
	// Rate is bytes per second over the last seconds; ETA the time left
	// at that rate (progress events, once known).
	Rate float64       `json:"rate,omitempty"`
	ETA  time.Duration `json:"eta_ns,omitempty"`
	// Source is where the image's stream is read from (source and
	// progress events), when mirrors are configured: the mirror's or the
	// repository's root, without userinfo; Mirror is false for the
	// repository.
	Source string `json:"source,omitempty"`
	Mirror bool   `json:"mirror,omitempty"`
	// Percent is the whole operation's progress, 0..100.
	Percent int    `json:"percent"`
	Message string `json:"message,omitempty"`
	Err     string `json:"error,omitempty"`
}

// Observer receives events. It is called from the operation's goroutine
// and must not block for long; nil discards.
type Observer func(Event)

// emitter stamps and forwards events.
type emitter struct {
	obs     Observer
	now     func() time.Time
	percent int
}

func (m *emitter) emit(ev Event) {
	if m.obs == nil {
		return
	}
	ev.Time = m.now()
	if ev.Percent == 0 {
		ev.Percent = m.percent
	}
	m.obs(ev)
}

func (m *emitter) phase(p, image, format string, a ...any) {
	m.emit(Event{Type: EventPhase, Phase: p, Image: image, Message: fmt.Sprintf(format, a...)})
}

func (m *emitter) message(format string, a ...any) {
	m.emit(Event{Type: EventMessage, Message: fmt.Sprintf(format, a...)})
}

// meter turns progress callbacks into progress events with a rate and an
// ETA, at most ten a second (and always the last).
type meter struct {
	m          *emitter
	image      string
	source     string // the stream's source, "" without mirrors
	mirror     bool
	base, span int // the image's share of the whole operation, in percent
	start      time.Time
	last       time.Time
	winAt      time.Time
	winDone    int64
	rate       float64
}

// sourceEvent reports a switch of the stream's source and remembers the
// source for the progress events that follow.
func (t *meter) sourceEvent(ev client.SourceEvent) {
	kind := "the repository"
	if ev.Mirror {
		kind = "mirror"
	}
	if ev.Err != nil {
		t.m.emit(Event{Type: EventSource, Phase: PhaseDownload, Image: t.image, Source: ev.Source, Mirror: ev.Mirror, Done: ev.At,
			Message: fmt.Sprintf("%s: %s %s failed, trying the next source: %v", t.image, kind, ev.Source, ev.Err), Err: ev.Err.Error()})
		return
	}
	t.source, t.mirror = ev.Source, ev.Mirror
	msg := fmt.Sprintf("%s: fetching the stream from %s %s", t.image, kind, ev.Source)
	if ev.At > 0 {
		msg += fmt.Sprintf(", continuing at the %d bytes already written and verified", ev.At)
	}
	t.m.emit(Event{Type: EventSource, Phase: PhaseDownload, Image: t.image, Source: ev.Source, Mirror: ev.Mirror, Done: ev.At, Message: msg})
}

func (t *meter) progress(done, total int64) {
	now := t.m.now()
	if t.start.IsZero() {
		t.start, t.winAt, t.winDone = now, now, done
	}
	if dt := now.Sub(t.winAt).Seconds(); dt >= 1 {
		r := float64(done-t.winDone) / dt
		if t.rate == 0 {
			t.rate = r
		} else {
			t.rate = 0.7*t.rate + 0.3*r
		}
		t.winAt, t.winDone = now, done
	}
	if done != total && now.Sub(t.last) < 100*time.Millisecond {
		return
	}
	t.last = now
	ev := Event{Type: EventProgress, Phase: PhaseDownload, Image: t.image, Done: done, Total: total, Rate: t.rate, Source: t.source, Mirror: t.mirror}
	if t.rate > 0 {
		ev.ETA = time.Duration(float64(total-done) / t.rate * float64(time.Second))
	}
	if total > 0 {
		ev.Percent = t.base + int(int64(t.span)*done/total)
	}
	t.m.percent = ev.Percent
	t.m.emit(ev)
}
