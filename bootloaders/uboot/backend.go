package uboot

import (
	"fmt"

	"github.com/sysupdate/sysupdate/bootloaders"
)

// Scheme names accepted by Open.
const (
	SchemeRAUC   = "rauc"
	SchemeMender = "mender"
)

// Slots is the slot names both schemes manage.
var Slots = []string{"a", "b"}

// scheme maps the shared slot model onto one set of U-Boot variables.
type scheme interface {
	name() string
	status(e Env) (bootloaders.Status, error)
	setNext(e *Env, slot string, tries int) error
	markGood(e *Env, slot string) error
	markBad(e *Env, slot string) error
}

// Backend implements bootloaders.Backend on a U-Boot environment. Each
// state change is one Store.Save: all variables of a transition in one
// image, written as one copy (see Store.Save for what a power cut leaves).
// A change that would not alter the environment writes nothing.
type Backend struct {
	store  *Store
	scheme scheme
}

var _ bootloaders.Backend = (*Backend)(nil)

// Open reads the fw_env.config at configPath, resolves its locations and
// returns a Backend using the named variable scheme ("rauc", the default
// when empty, or "mender" with root partitions 2 and 3).
func Open(configPath, schemeName string) (*Backend, error) {
	var sc scheme
	switch schemeName {
	case "", SchemeRAUC:
		sc = rauc{}
	case SchemeMender:
		sc = mender{partA: 2, partB: 3}
	default:
		return nil, fmt.Errorf("uboot: unknown variable scheme %q: use %q or %q", schemeName, SchemeRAUC, SchemeMender)
	}
	locs, err := ReadConfig(configPath)
	if err != nil {
		return nil, err
	}
	s, err := OpenStore(locs)
	if err != nil {
		return nil, err
	}
	return &Backend{store: s, scheme: sc}, nil
}

// NewRAUC returns a Backend using the RAUC variables (BOOT_ORDER,
// BOOT_<S>_LEFT) on s.
func NewRAUC(s *Store) *Backend { return &Backend{store: s, scheme: rauc{}} }

// NewMender returns a Backend using Mender's variables on s; slot a boots
// root partition number partA and slot b partB (Mender's defaults: 2, 3).
func NewMender(s *Store, partA, partB int) *Backend {
	return &Backend{store: s, scheme: mender{partA: partA, partB: partB}}
}

// Status reads the environment and derives the slot state; see the package
// documentation for each scheme's rules.
func (b *Backend) Status() (bootloaders.Status, error) {
	e, err := b.store.Load()
	if err != nil {
		return bootloaders.Status{}, err
	}
	return b.scheme.status(e)
}

// SetNext makes the next boot try slot up to tries times (<= 0 means
// bootloaders.DefaultTries) in one environment write.
func (b *Backend) SetNext(slot string, tries int) error {
	if tries <= 0 {
		tries = bootloaders.DefaultTries
	}
	if tries > 0xff {
		return fmt.Errorf("uboot: %d tries is too many (at most 255)", tries)
	}
	return b.update(slot, func(e *Env) error { return b.scheme.setNext(e, slot, tries) })
}

// MarkGood records that slot, the running one, works, in one write.
func (b *Backend) MarkGood(slot string) error {
	return b.update(slot, func(e *Env) error { return b.scheme.markGood(e, slot) })
}

// MarkBad makes slot unbootable from the next boot on, in one write.
func (b *Backend) MarkBad(slot string) error {
	return b.update(slot, func(e *Env) error { return b.scheme.markBad(e, slot) })
}

func (b *Backend) update(slot string, change func(*Env) error) error {
	if err := bootloaders.CheckSlot(slot, Slots); err != nil {
		return err
	}
	old, err := b.store.Load()
	if err != nil {
		return err
	}
	next := NewEnv(old.Vars()...)
	if err := change(&next); err != nil {
		return err
	}
	next.Sort()
	sorted := NewEnv(old.Vars()...)
	sorted.Sort()
	if next.Equal(sorted) {
		return nil
	}
	return b.store.Save(next)
}
