package main

import (
	"testing"
	"time"
)

func TestPresenceMeter(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	m := newPresenceMeter(3)
	// socket 0: online 4 s of the storm, a 2 KiB list, then four objects
	// in three frames within one second.
	m.frame(0, frame{Type: "hello"}, at(0))
	m.frame(0, frame{Type: "presence", Size: 2048}, at(1))
	for _, ms := range []int{1000, 1400, 1400, 1900} { // two at 1400: one frame
		m.frame(0, frame{Type: "online_count"}, at(ms))
	}
	// socket 1: online 2 s, a 1 KiB list, one change.
	m.frame(1, frame{Type: "hello"}, at(2000))
	m.frame(1, frame{Type: "presence", Size: 1024}, at(2001))
	m.frame(1, frame{Type: "online_count"}, at(2001)) // in the list's frame: no frame of its own
	m.frame(1, frame{Type: "presence", Size: 80}, at(3000))
	m.frame(1, frame{Type: "message"}, at(3100))
	// socket 2 never got its hello: not counted.
	// The storm's end is known after the fact: what came after is not counted.
	m.end = at(4000)
	m.frame(0, frame{Type: "online_count"}, at(5000))
	got := m.figures(at(4000))
	want := map[string]float64{
		"presence_first_kib_p50":         2,
		"presence_first_kib_max":         2,
		"presence_busiest_second_objs":   4,
		"presence_busiest_second_frames": 3,
		"presence_objects_per_sock_s":    1, // 6 objects in 6 socket-seconds
		"presence_frames_per_sock_s":     4.0 / 6.0,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
}
