package stream

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/Fuzz{Inspect,Verify}/hostile-* from hostileStreams")

// hostileStreams are the crafted streams of issue 8: a few hundred bytes
// each that declare huge buffers, targets or zero ops. They seed FuzzInspect
// and FuzzVerify (as files in testdata/fuzz, so `go test` replays them as
// seeds) and the command's RSS test (cmd/sysupdate), which runs the real
// binary on every seed file.
func hostileStreams(t testing.TB) map[string][]byte {
	_, delta := fuzzFixture(t)
	return map[string][]byte{
		"hostile-huge-limits": craft(4096, hugeLimits, 1, []byte{OpZero, CodecNone, 0x80, 0x20}, nil, 0xfffffff0),
		"hostile-zero-2p50":   zeroOpStream(1 << 50),
		"hostile-zero-2p62":   zeroOpStream(1 << 62),
		"hostile-table-64m":   craft(4096, hugeLimits, 1, []byte{OpZero, CodecNone, 0x80, 0x20}, nil, 64<<20),
		"plain-delta":         delta,
	}
}

// corpusFile encodes values in the Go fuzzing corpus format.
func corpusFile(vals ...[]byte) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, v := range vals {
		b.WriteString("[]byte(" + strconv.Quote(string(v)) + ")\n")
	}
	return b.Bytes()
}

// TestHostileCorpus keeps the seed files equal to hostileStreams (run with
// -update-corpus after changing them).
func TestHostileCorpus(t *testing.T) {
	streams := hostileStreams(t)
	names := make([]string, 0, len(streams))
	for n := range streams {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := streams[n]
		for dir, content := range map[string][]byte{
			"FuzzInspect": corpusFile(s),
			"FuzzVerify":  corpusFile(s, make([]byte, 4096)),
		} {
			p := filepath.Join("testdata", "fuzz", dir, n)
			if *updateCorpus {
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, content, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, content) {
				t.Errorf("%s differs from hostileStreams[%q] (%v): run go test ./stream -run TestHostileCorpus -update-corpus", p, n, err)
			}
		}
	}
}
