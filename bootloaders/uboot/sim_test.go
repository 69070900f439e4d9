package uboot

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/sysupdate/sysupdate/bootloaders"
)

// The simulators below execute each scheme's boot-time rule, written
// independently of the backend's Status code: bootRAUC follows boot.cmd
// statement by statement; bootMender follows U-Boot's CONFIG_BOOTCOUNT_ENV
// and Mender's altbootcmd. Before each boot the backend's Status().Next
// must name the slot the simulator then boots.

var strtoulHex = regexp.MustCompile(`^(0[xX])?([0-9a-fA-F]*)`)

// setexprValue reads an operand as U-Boot's setexpr does (hex).
func setexprValue(s string) uint64 {
	m := strtoulHex.FindStringSubmatch(s)
	if m[2] == "" {
		return 0
	}
	v, err := strconv.ParseUint(m[2], 16, 64)
	if err != nil {
		return ^uint64(0)
	}
	return v
}

// uDefaultRAUC is the built-in default environment U-Boot falls back to on
// a bad CRC on a board that uses boot.cmd: nothing of ours.
func uDefaultRAUC() Env { return NewEnv(Var{"bootdelay", "2"}) }

// bootRAUC runs boot.cmd once on the environment in s and returns the slot
// it boots ("a"/"b"). It fails the test if the script would reset.
func bootRAUC(t *testing.T, s *Store) string {
	t.Helper()
	e, err := s.Load()
	if err != nil {
		e = uDefaultRAUC()
	}
	get := func(n string) string { v, _ := e.Get(n); return v }
	// test -n "${X}" || setenv X default
	if get("BOOT_ORDER") == "" {
		e.Set("BOOT_ORDER", "A B")
	}
	for _, n := range []string{"BOOT_A_LEFT", "BOOT_B_LEFT"} {
		if get(n) == "" {
			e.Set(n, "3")
		}
		e.Set(n, fmt.Sprintf("%x", setexprValue(get(n))+0))
	}
	slot, known := "", false
	for pass := 1; pass <= 2; pass++ {
		if slot != "" {
			continue
		}
		for _, tok := range strings.Fields(get("BOOT_ORDER")) {
			if tok == "A" || tok == "B" {
				known = true
			}
			for _, x := range []string{"A", "B"} {
				n := "BOOT_" + x + "_LEFT"
				if slot == "" && tok == x && get(n) != "0" {
					e.Set(n, fmt.Sprintf("%x", setexprValue(get(n))-1))
					slot = x
				}
			}
		}
		if slot == "" {
			if !known {
				e.Set("BOOT_ORDER", "A B")
			}
			e.Set("BOOT_A_LEFT", "3")
			e.Set("BOOT_B_LEFT", "3")
		}
	}
	if slot == "" {
		t.Fatalf("boot.cmd found no slot in two passes: %q", e.Vars())
	}
	e.Set("sysupdate_slot", slot)
	e.Sort()
	if err := s.Save(e); err != nil {
		t.Fatal(err)
	}
	return strings.ToLower(slot)
}

// uDefaultMender is Mender's compiled-in default environment.
func uDefaultMender() Env {
	return NewEnv(Var{"mender_boot_part", "2"}, Var{"mender_boot_part_hex", "2"},
		Var{"upgrade_available", "0"}, Var{"bootcount", "0"}, Var{"bootlimit", "1"})
}

// envULong reads a variable as env_get_ulong(name, 10, 0) does.
func envULong(e Env, n string) uint64 {
	v, _ := e.Get(n)
	d := regexp.MustCompile(`^[0-9]*`).FindString(v)
	x, _ := strconv.ParseUint("0"+d, 10, 64)
	return x
}

// bootMender runs U-Boot's boot counting and Mender's altbootcmd once.
func bootMender(t *testing.T, s *Store) string {
	t.Helper()
	e, err := s.Load()
	if err != nil {
		e = uDefaultMender()
		if err := s.Save(e); err != nil { // mender_setup's saveenv canary
			t.Fatal(err)
		}
	}
	// bootcount_inc: load (0 unless upgrade_available), +1, store+save
	// only if upgrade_available.
	var count uint64
	ua := envULong(e, "upgrade_available") != 0
	if ua {
		count = envULong(e, "bootcount")
	}
	count++
	if ua {
		e.Set("bootcount", strconv.FormatUint(count, 10))
		if err := s.Save(e); err != nil {
			t.Fatal(err)
		}
	}
	if limit := envULong(e, "bootlimit"); limit != 0 && count > limit {
		// altbootcmd = run mender_altbootcmd; run bootcmd
		if p, _ := e.Get("mender_boot_part"); p == "2" {
			e.Set("mender_boot_part", "3")
			e.Set("mender_boot_part_hex", "3")
		} else {
			e.Set("mender_boot_part", "2")
			e.Set("mender_boot_part_hex", "2")
		}
		e.Set("upgrade_available", "0")
		if err := s.Save(e); err != nil {
			t.Fatal(err)
		}
	}
	switch p, _ := e.Get("mender_boot_part"); p {
	case "2":
		return "a"
	case "3":
		return "b"
	default:
		t.Fatalf("mender_boot_part=%q boots nothing", p)
		return ""
	}
}

type schemeSim struct {
	name    string
	backend func(*Store) *Backend
	boot    func(*testing.T, *Store) string
	initial Env // a committed slot a
}

var sims = []schemeSim{
	{"rauc", NewRAUC, bootRAUC, NewEnv(Var{"BOOT_ORDER", "A B"}, Var{"BOOT_A_LEFT", "3"}, Var{"BOOT_B_LEFT", "3"})},
	{"mender", func(s *Store) *Backend { return NewMender(s, 2, 3) }, bootMender, uDefaultMender()},
}

// machine is a board: an environment store, the backend, and the
// bootloader simulator.
type machine struct {
	t       *testing.T
	sim     schemeSim
	s       *Store
	b       *Backend
	running string
}

func newMachine(t *testing.T, sim schemeSim, copies int) *machine {
	s, _ := memStore(0x800, copies, Incremental)
	if err := s.Save(sim.initial); err != nil {
		t.Fatal(err)
	}
	return &machine{t: t, sim: sim, s: s, b: sim.backend(s)}
}

// boot checks that Status predicts the simulator's choice, then boots.
func (m *machine) boot() string {
	m.t.Helper()
	if st, err := m.b.Status(); err == nil {
		next := m.sim.boot(m.t, m.s)
		if st.Next != next {
			m.t.Fatalf("Status().Next = %q but the bootloader booted %q", st.Next, next)
		}
		m.running = next
	} else {
		m.running = m.sim.boot(m.t, m.s)
	}
	return m.running
}

func (m *machine) status() bootloaders.Status {
	m.t.Helper()
	st, err := m.b.Status()
	if err != nil {
		m.t.Fatal(err)
	}
	return st
}

func (m *machine) must(err error) {
	m.t.Helper()
	if err != nil {
		m.t.Fatal(err)
	}
}

func forEachSim(t *testing.T, f func(t *testing.T, m *machine)) {
	for _, sim := range sims {
		for _, copies := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/%d copies", sim.name, copies), func(t *testing.T) {
				f(t, newMachine(t, sim, copies))
			})
		}
	}
}

func TestSimTrialFallsBack(t *testing.T) {
	forEachSim(t, func(t *testing.T, m *machine) {
		if got := m.boot(); got != "a" {
			t.Fatalf("first boot: %s", got)
		}
		m.must(m.b.MarkGood("a"))
		m.must(m.b.SetNext("b", 3))
		for i := 1; i <= 3; i++ {
			if got := m.boot(); got != "b" {
				t.Fatalf("trial boot %d: booted %s, want b", i, got)
			}
			if st := m.status(); st.TrialFailed {
				t.Fatalf("trial boot %d: TrialFailed already: %+v", i, st)
			}
		}
		if got := m.boot(); got != "a" {
			t.Fatalf("4th boot: booted %s, want the fallback a", got)
		}
		st := m.status()
		if !st.TrialFailed || st.FailedSlot != "b" || st.Next != "a" {
			t.Errorf("after fallback: %+v, want TrialFailed of b, next a", st)
		}
		// The fallback slot keeps booting.
		for i := 0; i < 5; i++ {
			m.must(m.b.MarkGood("a"))
			if got := m.boot(); got != "a" {
				t.Fatalf("after fallback: booted %s", got)
			}
		}
	})
}

func TestSimMarkGoodKeeps(t *testing.T) {
	forEachSim(t, func(t *testing.T, m *machine) {
		m.boot()
		m.must(m.b.SetNext("b", 3))
		if got := m.boot(); got != "b" {
			t.Fatalf("trial boot: %s", got)
		}
		m.must(m.b.MarkGood("b"))
		st := m.status()
		if st.Next != "b" || st.TrialFailed || !st.Slots[1].Successful {
			t.Fatalf("after mark-good: %+v", st)
		}
		// The updater confirms the running slot on every healthy boot.
		for i := 0; i < 10; i++ {
			if got := m.boot(); got != "b" {
				t.Fatalf("boot %d after mark-good: %s", i, got)
			}
			m.must(m.b.MarkGood(m.running))
		}
	})
}

// TestSimMarkGoodOnce documents the difference between the schemes when
// mark-good runs only once: Mender stops counting; RAUC's counter keeps
// running on every boot (RAUC marks good on every boot), so the slot falls
// back after DefaultTries unconfirmed boots.
func TestSimMarkGoodOnce(t *testing.T) {
	forEachSim(t, func(t *testing.T, m *machine) {
		m.boot()
		m.must(m.b.MarkGood("a"))
		m.must(m.b.SetNext("b", 3))
		m.boot()
		m.must(m.b.MarkGood("b"))
		var got []string
		for i := 0; i < 6; i++ {
			got = append(got, m.boot())
		}
		want := "b b b b b b"
		if m.sim.name == "rauc" {
			want = "b b b a a a"
		}
		if strings.Join(got, " ") != want {
			t.Errorf("boots after one mark-good: %v, want %s", got, want)
		}
	})
}

func TestSimMarkBad(t *testing.T) {
	forEachSim(t, func(t *testing.T, m *machine) {
		m.boot()
		m.must(m.b.MarkGood("a"))
		m.must(m.b.SetNext("b", 3))
		if got := m.boot(); got != "b" {
			t.Fatalf("trial boot: %s", got)
		}
		m.must(m.b.MarkBad("b"))
		if st := m.status(); st.Next != "a" || st.Slots[1].Bootable {
			t.Fatalf("after mark-bad: %+v", st)
		}
		for i := 0; i < 4; i++ {
			if got := m.boot(); got != "a" {
				t.Fatalf("boot %d after mark-bad b: %s", i, got)
			}
			m.must(m.b.MarkGood("a"))
		}
		// Marking the running, committed slot bad switches on the next boot.
		m.must(m.b.SetNext("b", 3))
		m.boot()
		m.must(m.b.MarkGood("b"))
		m.must(m.b.MarkBad("b"))
		if got := m.boot(); got != "a" {
			t.Fatalf("after mark-bad of the committed slot b: booted %s", got)
		}
	})
}

func TestSimCorruptState(t *testing.T) {
	type corruption struct {
		name   string
		scheme string // "" = both
		apply  func(t *testing.T, m *machine, mem *memDevice)
	}
	setVars := func(vars ...Var) func(*testing.T, *machine, *memDevice) {
		return func(t *testing.T, m *machine, _ *memDevice) {
			e := mustEnv(t, m.s)
			for _, v := range vars {
				if v.Value == "<unset>" {
					e.Delete(v.Name)
				} else {
					e.Set(v.Name, v.Value)
				}
			}
			m.must(m.s.Save(e))
		}
	}
	for _, c := range []corruption{
		{"bad CRC in every copy", "", func(t *testing.T, m *machine, mem *memDevice) {
			for _, r := range m.s.Copies {
				mem.buf[r.Offset+100] ^= 0x55
			}
		}},
		{"empty environment", "rauc", func(t *testing.T, m *machine, _ *memDevice) { m.must(m.s.Save(Env{})) }},
		{"no BOOT_ORDER", "rauc", setVars(Var{"BOOT_ORDER", "<unset>"})},
		{"empty BOOT_ORDER", "rauc", setVars(Var{"BOOT_ORDER", ""})},
		{"BOOT_ORDER of unknown slots", "rauc", setVars(Var{"BOOT_ORDER", "X Y"})},
		{"lowercase BOOT_ORDER", "rauc", setVars(Var{"BOOT_ORDER", "a b"})},
		{"BOOT_ORDER with duplicates and junk", "rauc", setVars(Var{"BOOT_ORDER", " B,A B  B "})},
		{"no counters", "rauc", setVars(Var{"BOOT_A_LEFT", "<unset>"}, Var{"BOOT_B_LEFT", "<unset>"})},
		{"garbage counters", "rauc", setVars(Var{"BOOT_A_LEFT", "zz"}, Var{"BOOT_B_LEFT", "-1"})},
		{"all counters 0", "rauc", setVars(Var{"BOOT_A_LEFT", "0"}, Var{"BOOT_B_LEFT", "0"})},
		{"only B, exhausted", "rauc", setVars(Var{"BOOT_ORDER", "B"}, Var{"BOOT_B_LEFT", "0"})},
		{"no bootcount/bootlimit/upgrade_available", "mender", setVars(Var{"bootcount", "<unset>"}, Var{"bootlimit", "<unset>"}, Var{"upgrade_available", "<unset>"})},
		{"garbage counters", "mender", setVars(Var{"bootcount", "x"}, Var{"bootlimit", "y"}, Var{"upgrade_available", "1"})},
		{"bootcount far past bootlimit", "mender", setVars(Var{"bootcount", "99"}, Var{"upgrade_available", "1"})},
	} {
		for _, sim := range sims {
			if c.scheme != "" && c.scheme != sim.name {
				continue
			}
			for _, copies := range []int{1, 2} {
				t.Run(fmt.Sprintf("%s/%s/%d copies", sim.name, c.name, copies), func(t *testing.T) {
					s, mem := memStore(0x800, copies, Incremental)
					m := &machine{t: t, sim: sim, s: s, b: sim.backend(s)}
					m.must(s.Save(sim.initial))
					m.boot()
					c.apply(t, m, mem)
					seen := map[string]int{}
					for i := 0; i < 8; i++ {
						got := m.boot() // fails the test if no slot or a reset loop
						seen[got]++
						if _, err := m.s.Load(); err != nil {
							t.Fatalf("boot %d left an unreadable environment: %v", i, err)
						}
						if err := m.b.MarkGood(got); err != nil {
							t.Fatalf("mark-good %s after boot %d: %v", got, i, err)
						}
					}
					if len(seen) != 1 {
						t.Errorf("a confirmed slot did not stay: %v", seen)
					}
				})
			}
		}
	}
}

// TestSimMenderWithoutBootPart: a valid environment without
// mender_boot_part is not a Mender one; U-Boot's Mender integration has no
// slot to boot from it. Status says so, and set-next initialises it.
func TestSimMenderWithoutBootPart(t *testing.T) {
	s, _ := memStore(0x800, 2, Incremental)
	m := &machine{t: t, sim: sims[1], s: s, b: sims[1].backend(s)}
	m.must(s.Save(NewEnv(Var{"bootdelay", "2"})))
	if _, err := m.b.Status(); err == nil || !strings.Contains(err.Error(), "mender_boot_part") {
		t.Fatalf("Status: %v, want an error naming mender_boot_part", err)
	}
	if err := m.b.MarkGood("a"); err == nil {
		t.Fatal("mark-good on a non-Mender environment succeeded")
	}
	m.must(m.b.SetNext("a", 3))
	if got := m.boot(); got != "a" {
		t.Fatalf("booted %s", got)
	}
	m.must(m.b.MarkGood("a"))
	if st := m.status(); st.Next != "a" || !st.Slots[0].Successful {
		t.Errorf("%+v", st)
	}
}
