package grub

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Scheme names a set of grubenv variables and the boot-time rule that the
// boot script applies to them.
type Scheme string

const (
	// SchemeSysupdate is sysupdate's own scheme with N tries, run by the
	// shipped grub.cfg:
	//
	//	SYSUPDATE_ORDER="b a"  slots in order of preference
	//	<s>_OK=1               slot s confirmed itself (mark-good)
	//	<s>_LEFT=0..7          trial boots left while <s>_OK is not 1
	//
	// On each boot the script takes the first slot in SYSUPDATE_ORDER that
	// has <s>_OK=1, or else has <s>_LEFT in 1..7, which it decrements and
	// saves (save_env) before booting. If no slot qualifies it boots the
	// fallback slot ("a") without writing anything. Before all that, a
	// recovery request (RecoveryVar=1) is served once: the script saves
	// RecoveryVar=0, counts no try and boots the recovery system.
	SchemeSysupdate Scheme = "sysupdate"
	// SchemeRAUC is RAUC's GRUB scheme, one try per update:
	//
	//	ORDER="B A"   slots in order of preference (upper case)
	//	<S>_OK=1      slot is usable
	//	<S>_TRY=1     slot was started and has not confirmed itself
	//
	// On each boot the first slot in ORDER with <S>_OK=1 and <S>_TRY=0 is
	// chosen and <S>_TRY=1 is saved before booting it. If none qualifies
	// the fallback slot ("A") boots without writing anything.
	SchemeRAUC Scheme = "rauc"
)

// Fallback is the slot the shipped boot scripts boot when the grubenv names
// no usable slot (missing variables, an invalid order, every slot spent).
const Fallback = "a"

// RecoveryVar is the grubenv variable that asks the shipped grub.cfg
// (scheme sysupdate) to boot the recovery system once: "1" asks, the
// script saves "0" before booting it.
const RecoveryVar = "SYSUPDATE_RECOVERY"

// maxTries is the largest counter the shipped script can count down.
const maxTries = 7

// Decision is the outcome of one boot under a scheme's boot-time rule.
type Decision struct {
	// Slot is the slot booted (lower case).
	Slot string
	// Save lists the variables the boot script saves before booting, in
	// the order it saves them; empty when it writes nothing.
	Save []Var
	// Fallback reports that no slot qualified and Slot is the fallback.
	Fallback bool
	// Recovery reports that the recovery system boots (RecoveryVar was
	// "1"); Slot is then the fallback slot and no try is counted.
	Recovery bool
}

// Boot applies the scheme's documented boot-time rule (what the shipped
// grub.cfg or RAUC's script does) to env and returns the decision. It does
// not modify env; apply Decision.Save to simulate the boot's write. slots
// are the slot names the script knows ("a".."d").
func (s Scheme) Boot(env *Env, slots []string) Decision {
	get := func(name string) string { v, _ := env.Get(name); return v }
	switch s {
	case SchemeRAUC:
		order, _ := env.Get("ORDER")
		for _, w := range strings.Fields(order) {
			low := strings.ToLower(w)
			if w != strings.ToUpper(low) || !slices.Contains(slots, low) {
				continue
			}
			if get(w+"_OK") == "1" && get(w+"_TRY") == "0" {
				return Decision{Slot: low, Save: []Var{{w + "_TRY", "1"}}}
			}
		}
	default:
		if get(RecoveryVar) == "1" {
			return Decision{Slot: Fallback, Recovery: true, Save: []Var{{RecoveryVar, "0"}}}
		}
		order, _ := env.Get("SYSUPDATE_ORDER")
		for _, w := range strings.Fields(order) {
			if !slices.Contains(slots, w) {
				continue
			}
			if get(w+"_OK") == "1" {
				return Decision{Slot: w}
			}
			if n, ok := decrement(get(w + "_LEFT")); ok {
				return Decision{Slot: w, Save: []Var{{w + "_LEFT", n}}}
			}
		}
	}
	return Decision{Slot: Fallback, Fallback: true}
}

// decrement is the script's fixed chain "7"->"6" ... "1"->"0"; anything
// else cannot be counted down.
func decrement(v string) (string, bool) {
	if len(v) != 1 || v[0] < '1' || v[0] > '0'+maxTries {
		return "", false
	}
	return string(v[0] - 1), true
}

// varName returns the grubenv spelling of a slot name under the scheme.
func (s Scheme) varName(slot string) string {
	if s == SchemeRAUC {
		return strings.ToUpper(slot)
	}
	return slot
}

func (s Scheme) orderVar() string {
	if s == SchemeRAUC {
		return "ORDER"
	}
	return "SYSUPDATE_ORDER"
}

// ParseScheme returns the scheme called name ("sysupdate" or "rauc").
func ParseScheme(name string) (Scheme, error) {
	switch Scheme(name) {
	case SchemeSysupdate, SchemeRAUC:
		return Scheme(name), nil
	}
	return "", fmt.Errorf("grub: unknown scheme %q: use sysupdate or rauc", name)
}

// order returns the slot names in the scheme's order variable, lower case,
// keeping only known slots, without duplicates, and whether it is set.
func (s Scheme) order(env *Env, slots []string) ([]string, bool) {
	v, ok := env.Get(s.orderVar())
	var out []string
	for _, w := range strings.Fields(v) {
		low := strings.ToLower(w)
		if s.varName(low) != w || !slices.Contains(slots, low) || slices.Contains(out, low) {
			continue
		}
		out = append(out, low)
	}
	return out, ok
}

func (s Scheme) setOrder(env *Env, order []string) error {
	w := make([]string, len(order))
	for i, o := range order {
		w[i] = s.varName(o)
	}
	return env.Set(s.orderVar(), strings.Join(w, " "))
}

// tries returns the trial boots left for slot: <s>_LEFT under sysupdate,
// 1 under RAUC while OK=1 and TRY=0.
func (s Scheme) tries(env *Env, slot string) int {
	v := s.varName(slot)
	if s == SchemeRAUC {
		ok, _ := env.Get(v + "_OK")
		try, _ := env.Get(v + "_TRY")
		if ok == "1" && try == "0" {
			return 1
		}
		return 0
	}
	left, _ := env.Get(v + "_LEFT")
	if _, ok := decrement(left); ok {
		n, _ := strconv.Atoi(left)
		return n
	}
	return 0
}
