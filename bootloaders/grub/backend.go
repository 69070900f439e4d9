package grub

import (
	"fmt"
	"slices"

	"github.com/sysupdate/sysupdate/bootloaders"
)

// Config says where the grubenv is and how the slots are encoded in it.
type Config struct {
	// Path is the grubenv file, e.g. /boot/grub/grubenv or a file on the
	// EFI system partition. It must exist and be exactly Size bytes.
	Path string
	// Scheme is SchemeSysupdate (the default when empty) or SchemeRAUC.
	Scheme Scheme
	// Slots are the slot names managed, lower case, a subset of "a".."d";
	// nil means "a" and "b".
	Slots []string
	// Booted is the running slot (partition.CmdlineSlot reads it from the
	// kernel command line), used by Status to tell a trial in progress
	// from a failed one. Empty means unknown (recovery, a build host).
	Booted string
}

// Backend keeps A/B state in a grubenv. Every state change reads the
// block, edits it as grub-editenv would and rewrites the whole block in
// place with one write and an fsync (WriteFile). It implements
// bootloaders.Backend.
type Backend struct {
	cfg Config
}

var _ bootloaders.Backend = (*Backend)(nil)

// New checks cfg and returns a Backend. It does not touch the file.
func New(cfg Config) (*Backend, error) {
	if cfg.Scheme == "" {
		cfg.Scheme = SchemeSysupdate
	}
	if _, err := ParseScheme(string(cfg.Scheme)); err != nil {
		return nil, err
	}
	if cfg.Slots == nil {
		cfg.Slots = []string{"a", "b"}
	}
	for i, s := range cfg.Slots {
		if len(s) != 1 || s[0] < 'a' || s[0] > 'd' || slices.Contains(cfg.Slots[:i], s) {
			return nil, fmt.Errorf("grub: slot names must be distinct letters a..d, got %q", cfg.Slots)
		}
	}
	if cfg.Path == "" {
		return nil, fmt.Errorf("grub: no grubenv path given")
	}
	return &Backend{cfg: cfg}, nil
}

// booted returns the running slot, or "".
func (b *Backend) booted() string { return b.cfg.Booted }

// Status reads the grubenv and reports each slot, the slot the boot script
// will choose next and whether a trial failed. A block that is not exactly
// Size bytes, or that GRUB would not read to the end, is an error.
func (b *Backend) Status() (bootloaders.Status, error) {
	env, err := ReadFile(b.cfg.Path)
	if err != nil {
		return bootloaders.Status{}, err
	}
	return b.status(env), nil
}

func (b *Backend) status(env *Env) bootloaders.Status {
	s := b.cfg.Scheme
	order, _ := s.order(env, b.cfg.Slots)
	st := bootloaders.Status{Scheme: string(s), Next: s.Boot(env, b.cfg.Slots).Slot}
	booted := b.booted()
	for _, name := range slices.Sorted(slices.Values(b.cfg.Slots)) {
		v := s.varName(name)
		ok, _ := env.Get(v + "_OK")
		try, _ := env.Get(v + "_TRY")
		idx := slices.Index(order, name)
		sl := bootloaders.Slot{Name: name, TriesLeft: s.tries(env, name)}
		if idx >= 0 {
			sl.Priority = len(order) - idx
		}
		if s == SchemeRAUC {
			sl.Successful = ok == "1" && try == "0"
			sl.Bootable = idx >= 0 && sl.Successful
		} else {
			sl.Successful = ok == "1"
			sl.Bootable = idx >= 0 && (sl.Successful || sl.TriesLeft > 0)
		}
		st.Slots = append(st.Slots, sl)
		// A slot still in the order that the script now skips, and that is
		// not the one running (its last try in progress), failed its trial.
		spent := !sl.Bootable && (s == SchemeRAUC && ok == "1" && try == "1" || s != SchemeRAUC && ok != "1")
		if idx >= 0 && spent && name != booted && !st.TrialFailed {
			st.TrialFailed, st.FailedSlot = true, name
		}
	}
	return st
}

// update reads the block, lets edit change it and writes it back in one
// in-place write.
func (b *Backend) update(slot string, edit func(env *Env, order []string, orderSet bool) error) error {
	if err := bootloaders.CheckSlot(slot, b.cfg.Slots); err != nil {
		return err
	}
	env, err := ReadFile(b.cfg.Path)
	if err != nil {
		return err
	}
	order, set := b.cfg.Scheme.order(env, b.cfg.Slots)
	if err := edit(env, order, set); err != nil {
		return fmt.Errorf("grubenv %s: %w", b.cfg.Path, err)
	}
	return WriteFile(b.cfg.Path, env)
}

func setAll(env *Env, vars ...Var) error {
	for _, v := range vars {
		if err := env.Set(v.Name, v.Value); err != nil {
			return err
		}
	}
	return nil
}

// SetNext puts slot first in the order and grants it tries trial boots
// (sysupdate: <s>_OK=0, <s>_LEFT=tries, at most 7; RAUC: <S>_OK=1,
// <S>_TRY=0, which is one try whatever tries says). Slots already in the
// order keep their relative order; when the order variable is missing the
// other managed slots follow. One in-place write.
func (b *Backend) SetNext(slot string, tries int) error {
	if tries <= 0 {
		tries = bootloaders.DefaultTries
	}
	if tries > maxTries {
		return fmt.Errorf("grub: %d tries requested, the boot script counts at most %d", tries, maxTries)
	}
	s := b.cfg.Scheme
	return b.update(slot, func(env *Env, order []string, set bool) error {
		rest := order
		if !set || s == SchemeRAUC {
			rest = append(slices.Clone(order), b.cfg.Slots...)
		}
		next := []string{slot}
		for _, o := range rest {
			if !slices.Contains(next, o) {
				next = append(next, o)
			}
		}
		if err := s.setOrder(env, next); err != nil {
			return err
		}
		v := s.varName(slot)
		if s == SchemeRAUC {
			return setAll(env, Var{v + "_OK", "1"}, Var{v + "_TRY", "0"})
		}
		return setAll(env, Var{v + "_OK", "0"}, Var{v + "_LEFT", fmt.Sprint(tries)})
	})
}

// MarkGood records that slot works: <s>_OK=1 and its counter cleared
// (<s>_LEFT=0, or <S>_TRY=0 under RAUC). The order is left as it is, so a
// pending SetNext of another slot is not undone; a slot missing from the
// order is appended to it. One in-place write.
func (b *Backend) MarkGood(slot string) error {
	s := b.cfg.Scheme
	return b.update(slot, func(env *Env, order []string, _ bool) error {
		if !slices.Contains(order, slot) {
			if err := s.setOrder(env, append(order, slot)); err != nil {
				return err
			}
		}
		v := s.varName(slot)
		if s == SchemeRAUC {
			return setAll(env, Var{v + "_OK", "1"}, Var{v + "_TRY", "0"})
		}
		return setAll(env, Var{v + "_OK", "1"}, Var{v + "_LEFT", "0"})
	})
}

// MarkBad makes slot unbootable from the next boot on: <s>_OK=0 with no
// tries left, and (sysupdate scheme) removed from the order, so that Status
// does not count it as a failed trial. RAUC keeps the order as RAUC does.
// One in-place write.
func (b *Backend) MarkBad(slot string) error {
	s := b.cfg.Scheme
	return b.update(slot, func(env *Env, order []string, _ bool) error {
		v := s.varName(slot)
		if s == SchemeRAUC {
			return setAll(env, Var{v + "_OK", "0"}, Var{v + "_TRY", "0"})
		}
		if i := slices.Index(order, slot); i >= 0 {
			if err := s.setOrder(env, slices.Delete(slices.Clone(order), i, i+1)); err != nil {
				return err
			}
		}
		return setAll(env, Var{v + "_OK", "0"}, Var{v + "_LEFT", "0"})
	})
}
