package repo

import "time"

// nextGenerated returns a Generated time for a new index: now (seconds
// precision), or one second past prev when the clock has not moved on,
// so Generated strictly increases.
func nextGenerated(prev, now time.Time) time.Time {
	g := now.UTC().Truncate(time.Second)
	if !g.After(prev) {
		g = prev.UTC().Truncate(time.Second).Add(time.Second)
	}
	return g
}
