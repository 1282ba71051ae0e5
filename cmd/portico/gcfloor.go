package main

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// gcFloor is the least room the garbage collector gets above the live
// heap before it starts a cycle.
//
// With GOGC=100 a cycle starts once the heap has grown by as much as is
// live (4 MiB at least). Portico's live heap is a few MiB while it serves
// tens of thousands of small requests a second, each allocating about a
// kilobyte: that is 30 to 40 cycles a second, and each scans every
// connection's goroutine stack and shrinks the idle ones, which then grow
// again (a CPU profile of a 1 KiB static file at 256 connections showed
// 15% of the CPU in the collector and in stack growth). Keeping at least
// gcFloor of room (at most maxGCPercent) cuts the cycles several times
// over: measured as GOGC=400, +5% req/s at 64 connections, +9% at 256, for
// about 12 MiB of RSS (a 16 MiB floor gained nothing more and cost 28 MiB).
// Once the live heap is larger than gcFloor (18,000 idle connections),
// GOGC=100 applies again: the memory per connection does not change.
const gcFloor = 8 << 20

// maxGCPercent bounds the GC percent the floor sets for a tiny live heap.
const maxGCPercent = 400

// tuneGC sets the GC percent every second from the live heap so that a
// cycle starts no sooner than gcFloor above it, until ctx ends; stop waits
// for it. A GOGC in the environment is the operator's choice and is left
// alone.
func tuneGC(ctx context.Context) (stop func()) {
	if _, set := os.LookupEnv("GOGC"); set {
		return func() {}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		t := time.NewTicker(time.Second)
		defer t.Stop()
		last := 100
		for {
			metrics.Read(sample)
			if sample[0].Value.Kind() == metrics.KindUint64 {
				if p := gcPercent(sample[0].Value.Uint64()); p != last {
					debug.SetGCPercent(p)
					last = p
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	return wg.Wait
}

// gcPercent is the GC percent that puts the heap goal at live + gcFloor
// when that is more than twice live, else 100.
func gcPercent(live uint64) int {
	if live >= gcFloor {
		return 100
	}
	if live < gcFloor/maxGCPercent*100 {
		return maxGCPercent
	}
	return int(100 * gcFloor / live)
}

// releaseIdleMemory is the servers' OnIdleDrop: after a burst of
// connections went idle (a thousand parked, none for a second), the memory
// their requests used is garbage the runtime would keep until its next
// cycle, which an idle process with the floor above may not start for two
// minutes; sync.Pool keeps its objects one collection longer, hence two.
// The free memory then goes back to the OS (with the parking itself, this
// took 18,000 idle connections from 7.4 to 1.9 KiB of RSS each in
// bench/idleconns). Each server calls it at most once every 30 seconds.
func releaseIdleMemory() {
	runtime.GC()
	debug.FreeOSMemory() // collects again, then returns the memory
}
