package main

import "testing"

func TestGCPercent(t *testing.T) {
	for _, tc := range []struct {
		live uint64
		want int
	}{
		{0, maxGCPercent},
		{1 << 20, maxGCPercent}, // 8 MiB / 1 MiB = 800%: capped
		{2 << 20, 400},          // room 8 MiB
		{4 << 20, 200},          // goal 12 MiB
		{gcFloor, 100},          // the floor reached: GOGC's default
		{100 << 20, 100},        // larger heaps: GOGC's default
	} {
		if got := gcPercent(tc.live); got != tc.want {
			t.Errorf("gcPercent(%d MiB) = %d, want %d", tc.live>>20, got, tc.want)
		}
	}
}
