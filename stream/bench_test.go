package stream

import (
	"bytes"
	"context"
	"testing"
)

func BenchmarkApplySmall(b *testing.B) {
	src, _, s, _ := fixture(b)
	for b.Loop() {
		tg := &memTarget{}
		if _, err := Apply(context.Background(), bytes.NewReader(s), tg, ApplyOptions{Source: bytes.NewReader(src), Budget: smallLimits}); err != nil {
			b.Fatal(err)
		}
	}
}
