package uboot

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/sysupdate/sysupdate/bootloaders"
)

// Variables of the RAUC scheme. BOOT_ORDER and BOOT_<S>_LEFT are RAUC's;
// sysupdate_trial and sysupdate_slot are sysupdate's own (U-Boot and RAUC
// ignore them): the slot on trial since set-next, and the slot the shipped
// boot.cmd chose on the last boot.
const (
	varBootOrder = "BOOT_ORDER"
	varTrial     = "sysupdate_trial"
	varChosen    = "sysupdate_slot"
)

// defaultOrder is what boot.cmd uses when BOOT_ORDER is unset or names no
// known slot.
var defaultOrder = []string{"A", "B"}

type rauc struct{}

func (rauc) name() string { return SchemeRAUC }

func raucSlot(slot string) string { return strings.ToUpper(slot) }

func leftVar(rslot string) string { return "BOOT_" + rslot + "_LEFT" }

// hexValue parses a number the way U-Boot's setexpr reads its operands
// (simple_strtoul base 16): an optional 0x, then hex digits up to the
// first other byte; nothing parsable is 0.
func hexValue(s string) uint64 {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	var v uint64
	for i := 0; i < len(s); i++ {
		d, ok := hexDigit(s[i])
		if !ok {
			break
		}
		v = v<<4 | uint64(d)
	}
	return v
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// raucView is the environment as boot.cmd sees it after its defaults.
type raucView struct {
	order []string          // known slots (A, B) in BOOT_ORDER order, first occurrence
	left  map[string]uint64 // per RAUC slot name
	// known reports whether BOOT_ORDER names any known slot.
	known bool
}

func viewRAUC(e Env) raucView {
	v := raucView{left: map[string]uint64{}}
	order, ok := e.Get(varBootOrder)
	if !ok || order == "" {
		order = strings.Join(defaultOrder, " ")
	}
	seen := map[string]bool{}
	for _, tok := range strings.Fields(order) {
		if (tok == "A" || tok == "B") && !seen[tok] {
			seen[tok] = true
			v.order = append(v.order, tok)
		}
	}
	v.known = len(v.order) > 0
	for _, s := range defaultOrder {
		l, ok := e.Get(leftVar(s))
		if !ok || l == "" {
			v.left[s] = bootloaders.DefaultTries
		} else {
			v.left[s] = hexValue(l)
		}
	}
	return v
}

// next is boot.cmd's choice: the first slot in order with tries left; if
// none, the script resets every counter (and an order naming no known slot)
// to the defaults and picks again.
func (v raucView) next() string {
	for _, s := range v.order {
		if v.left[s] > 0 {
			return s
		}
	}
	if !v.known {
		return defaultOrder[0]
	}
	return v.order[0]
}

func (r rauc) status(e Env) (bootloaders.Status, error) {
	v := viewRAUC(e)
	trial, _ := e.Get(varTrial)
	st := bootloaders.Status{Scheme: SchemeRAUC, Next: strings.ToLower(v.next())}
	for _, name := range Slots {
		rs := raucSlot(name)
		sl := bootloaders.Slot{Name: name, TriesLeft: int(min(v.left[rs], 1<<20))}
		for i, o := range v.order {
			if o == rs {
				sl.Priority = len(v.order) - i
				sl.Bootable = v.left[rs] > 0
			}
		}
		sl.Successful = sl.Bootable && trial != rs
		st.Slots = append(st.Slots, sl)
	}
	if len(v.order) > 0 {
		first := v.order[0]
		chosen, haveChosen := e.Get(varChosen)
		if v.left[first] == 0 && (!haveChosen || chosen != first) {
			st.TrialFailed = true
			st.FailedSlot = strings.ToLower(first)
		}
	}
	return st, nil
}

func (rauc) setNext(e *Env, slot string, tries int) error {
	rs := raucSlot(slot)
	v := viewRAUC(*e)
	order := []string{rs}
	for _, o := range v.order {
		if o != rs {
			order = append(order, o)
		}
	}
	e.Set(varBootOrder, strings.Join(order, " "))
	e.Set(leftVar(rs), strconv.FormatUint(uint64(tries), 16))
	e.Set(varTrial, rs)
	return nil
}

func (rauc) markGood(e *Env, slot string) error {
	rs := raucSlot(slot)
	e.Set(leftVar(rs), strconv.Itoa(bootloaders.DefaultTries))
	if t, _ := e.Get(varTrial); t == rs {
		e.Delete(varTrial)
	}
	return nil
}

func (rauc) markBad(e *Env, slot string) error {
	rs := raucSlot(slot)
	v := viewRAUC(*e)
	var order []string
	for _, o := range v.order {
		if o != rs {
			order = append(order, o)
		}
	}
	if len(order) == 0 {
		return fmt.Errorf("uboot: refusing to mark slot %s bad: it is the only slot left in %s=%q, and with none the boot script resets every slot to bootable; set-next another slot first", slot, varBootOrder, strings.Join(v.order, " "))
	}
	e.Set(varBootOrder, strings.Join(order, " "))
	e.Set(leftVar(rs), "0")
	if t, _ := e.Get(varTrial); t == rs {
		e.Delete(varTrial)
	}
	return nil
}
