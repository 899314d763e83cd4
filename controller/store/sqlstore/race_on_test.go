//go:build race

package sqlstore

// raceEnabled: the race detector's sync.Pool drops a quarter of what is
// put back, on purpose, so a pooled buffer is sometimes made again.
const raceEnabled = true
