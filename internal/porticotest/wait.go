package porticotest

import (
	"testing"
	"time"
)

// pollInterval is how often WaitFor looks at its condition: short against
// the tests' timeouts, long enough not to starve the code under test.
const pollInterval = 5 * time.Millisecond

// WaitFor polls cond until it is true; the test fails, naming what it
// waited for, when timeout passes first. The timeout bounds a wait for an
// event, it does not order events: a test that passes with a longer
// timeout also passes with this one on a machine that is not stalled.
func WaitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(pollInterval)
	}
}
