package qemutests

import (
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
)

// cutRow is what one power-cut test did, one line of the table TestMain
// prints after the run.
type cutRow struct {
	Test     string // the test's name
	Path     string // boot path: "GRUB x86_64", "U-Boot arm64", "Android arm64"
	Write    string // what was being written when QEMU was killed
	Seed     uint64 // of the random cut points
	Cuts     int    // QEMU killed
	Inside   int    // cuts that landed inside the write (mid-stream, or inside a set-next process)
	Boots    int    // boots, cut or not, checked against the predicted slot
	Bricks   int    // boots that did not reach the predicted slot's guest (must be 0)
	Resumes  int    // install runs after a cut that continued from the checkpoint it left (-1: not an install test)
	Restarts int    // install runs after a cut that started from zero (the cut came before the first checkpoint)
	Refetch  int    // runs after a cut that had to write again target bytes the cut run had reported written
	// RefetchBytes is the sum of those bytes: the last progress the cut
	// run printed minus the checkpoint's target offset (all of it for a
	// restart). A lower bound: the cut run may have gone on a little
	// after its last line reached the host.
	RefetchBytes int64
}

// cutTable collects the rows of every power-cut test in this run.
var cutTable struct {
	sync.Mutex
	rows []cutRow
}

// recordCuts adds a test's row to the table and fails the test when a
// boot bricked.
func recordCuts(t *testing.T, r cutRow) {
	t.Helper()
	r.Test = t.Name()
	cutTable.Lock()
	cutTable.rows = append(cutTable.rows, r)
	cutTable.Unlock()
	t.Logf("power cuts: %s", r)
	if r.Bricks > 0 {
		t.Errorf("%d of %d boots after a power cut bricked (did not reach the slot the bootloader state predicts)", r.Bricks, r.Boots)
	}
}

func (r cutRow) String() string {
	s := fmt.Sprintf("%s, %s, seed %d: %d cuts, %d inside the write, %d boots, %d bricks", r.Path, r.Write, r.Seed, r.Cuts, r.Inside, r.Boots, r.Bricks)
	if r.Resumes >= 0 {
		s += fmt.Sprintf(", %d resumed, %d restarted, %d refetched (%d target bytes redone)", r.Resumes, r.Restarts, r.Refetch, r.RefetchBytes)
	}
	return s
}

// printCutTable writes the table of this run's power-cut rows (nothing
// when no power-cut test ran).
func printCutTable(w io.Writer) {
	cutTable.Lock()
	rows := append([]cutRow(nil), cutTable.rows...)
	cutTable.Unlock()
	writeCutTable(w, rows)
}

// writeCutTable writes rows as the table, sorted by test, with a total.
func writeCutTable(w io.Writer, rows []cutRow) {
	if len(rows) == 0 {
		return
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Test < rows[j].Test })
	head := []string{"test", "boot path", "cut during", "cuts", "inside", "boots", "bricks", "resumed", "restarted", "refetched", "bytes redone", "seed"}
	cells := [][]string{head}
	var total cutRow
	for _, r := range rows {
		res, rst, rf, rb := "-", "-", "-", "-"
		if r.Resumes >= 0 {
			res, rst, rf, rb = fmt.Sprint(r.Resumes), fmt.Sprint(r.Restarts), fmt.Sprint(r.Refetch), fmt.Sprint(r.RefetchBytes)
			total.Resumes += r.Resumes
			total.Restarts += r.Restarts
			total.Refetch += r.Refetch
			total.RefetchBytes += r.RefetchBytes
		}
		total.Cuts += r.Cuts
		total.Inside += r.Inside
		total.Boots += r.Boots
		total.Bricks += r.Bricks
		cells = append(cells, []string{r.Test, r.Path, r.Write, fmt.Sprint(r.Cuts), fmt.Sprint(r.Inside), fmt.Sprint(r.Boots), fmt.Sprint(r.Bricks), res, rst, rf, rb, fmt.Sprint(r.Seed)})
	}
	res, rst, rf, rb := "-", "-", "-", "-"
	if slices.ContainsFunc(rows, func(r cutRow) bool { return r.Resumes >= 0 }) {
		res, rst, rf, rb = fmt.Sprint(total.Resumes), fmt.Sprint(total.Restarts), fmt.Sprint(total.Refetch), fmt.Sprint(total.RefetchBytes)
	}
	cells = append(cells, []string{"total", "", "", fmt.Sprint(total.Cuts), fmt.Sprint(total.Inside), fmt.Sprint(total.Boots), fmt.Sprint(total.Bricks),
		res, rst, rf, rb, ""})
	width := make([]int, len(head))
	for _, row := range cells {
		for i, c := range row {
			width[i] = max(width[i], len(c))
		}
	}
	line := 2 * (len(width) - 1)
	for _, n := range width {
		line += n
	}
	fmt.Fprintln(w, "power cuts (issue 10): bricks must be 0")
	for n, row := range cells {
		var b strings.Builder
		for i, c := range row {
			if i > 0 {
				b.WriteString("  ")
			}
			fmt.Fprintf(&b, "%-*s", width[i], c)
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
		if n == 0 || n == len(cells)-2 {
			fmt.Fprintln(w, strings.Repeat("-", line))
		}
	}
}

// TestCutTable checks the table's layout and sums on made-up rows (no
// QEMU): columns line up, install columns are "-" for set-next rows, and
// the total adds up.
func TestCutTable(t *testing.T) {
	var b strings.Builder
	writeCutTable(&b, []cutRow{
		{Test: "TestZ", Path: "GRUB x86_64", Write: "set-next", Seed: 7, Cuts: 8, Inside: 6, Boots: 9, Resumes: -1},
		{Test: "TestA", Path: "U-Boot arm64", Write: "install stream", Seed: 9, Cuts: 5, Inside: 4, Boots: 7, Bricks: 1, Resumes: 3, Restarts: 1, Refetch: 4, RefetchBytes: 1000},
	})
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 7 {
		t.Fatalf("want title, header, rule, 2 rows, rule, total; got %d lines:\n%s", len(lines), b.String())
	}
	fields := func(i int) []string { return strings.Fields(lines[i]) }
	for i, want := range map[int][]string{
		3: {"TestA", "U-Boot", "arm64", "install", "stream", "5", "4", "7", "1", "3", "1", "4", "1000", "9"},
		4: {"TestZ", "GRUB", "x86_64", "set-next", "8", "6", "9", "0", "-", "-", "-", "-", "7"},
		6: {"total", "13", "10", "16", "1", "3", "1", "4", "1000"},
	} {
		if !slices.Equal(fields(i), want) {
			t.Errorf("line %d: %q, want fields %q", i, lines[i], want)
		}
	}
	col := strings.Index(lines[1], "bricks")
	for _, i := range []int{3, 4, 6} {
		if len(lines[i]) <= col || lines[i][col-2:col] != "  " || lines[i][col] == ' ' {
			t.Errorf("line %d does not put bricks under its header at column %d:\n%s\n%s", i, col, lines[1], lines[i])
		}
	}
	if len(lines[2]) < len(lines[3]) || strings.Trim(lines[2], "-") != "" {
		t.Errorf("rule %q is not a full-width line of dashes", lines[2])
	}
}

// TestMain runs the tests, then prints the power-cut table on stdout,
// which `go test` without -v shows in local directory mode (the Makefile
// runs this package that way).
func TestMain(m *testing.M) {
	code := m.Run()
	printCutTable(os.Stdout)
	os.Exit(code)
}
