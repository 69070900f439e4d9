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

// printCutTable writes the table of power-cut rows (nothing when no
// power-cut test ran).
func printCutTable(w io.Writer) {
	cutTable.Lock()
	defer cutTable.Unlock()
	if len(cutTable.rows) == 0 {
		return
	}
	rows := append([]cutRow(nil), cutTable.rows...)
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

// TestMain runs the tests, then prints the power-cut table on stdout,
// which `go test` without -v shows in local directory mode (the Makefile
// runs this package that way).
func TestMain(m *testing.M) {
	code := m.Run()
	printCutTable(os.Stdout)
	os.Exit(code)
}
