package main

import (
	"slices"
	"sync"
	"time"
)

// presenceMeter counts what presence costs each socket of a connect
// storm: the size of its first presence object (the online list, or in
// partial mode its contacts and the total) and how many presence and
// online_count objects, and websocket frames holding them, follow while
// the storm lasts. The objects of one frame share its read time.
type presenceMeter struct {
	mu    sync.Mutex
	socks []presenceSocket
}

type presenceSocket struct {
	hello   time.Time
	first   int         // bytes of the first presence object; 0 before it
	objects []time.Time // presence and online_count objects after the first
	frames  []time.Time // the frames that held them
}

func newPresenceMeter(sockets int) *presenceMeter {
	return &presenceMeter{socks: make([]presenceSocket, sockets)}
}

// frame records socket i's frame f, read at at.
func (m *presenceMeter) frame(i int, f frame, at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := &m.socks[i]
	switch {
	case f.Type == "hello":
		s.hello = at
	case f.Type == "presence" && s.first == 0:
		s.first = f.Size
	case f.Type == "presence" || f.Type == "online_count":
		if n := len(s.objects); n == 0 || !s.objects[n-1].Equal(at) {
			s.frames = append(s.frames, at)
		}
		s.objects = append(s.objects, at)
	}
}

// figures are the first objects' sizes (median and largest, KiB) and,
// of the objects and of the frames after them up to end: how many per
// socket-second online (each socket counted from its hello), and the
// most any socket got within one second.
func (m *presenceMeter) figures(end time.Time) map[string]float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var firsts []int
	var objects, frames, busiestObjects, busiestFrames int
	var online time.Duration
	for _, s := range m.socks {
		if s.hello.IsZero() {
			continue
		}
		firsts = append(firsts, s.first)
		online += end.Sub(s.hello)
		n, most := countUntil(s.objects, end)
		objects, busiestObjects = objects+n, max(busiestObjects, most)
		n, most = countUntil(s.frames, end)
		frames, busiestFrames = frames+n, max(busiestFrames, most)
	}
	if len(firsts) == 0 || online <= 0 {
		return map[string]float64{}
	}
	slices.Sort(firsts)
	return map[string]float64{
		"presence_first_kib_p50":         float64(firsts[len(firsts)/2]) / 1024,
		"presence_first_kib_max":         float64(firsts[len(firsts)-1]) / 1024,
		"presence_objects_per_sock_s":    float64(objects) / online.Seconds(),
		"presence_frames_per_sock_s":     float64(frames) / online.Seconds(),
		"presence_busiest_second_objs":   float64(busiestObjects),
		"presence_busiest_second_frames": float64(busiestFrames),
	}
}

// countUntil is how many of times (in order) are up to end, and the most
// of them within any one second.
func countUntil(times []time.Time, end time.Time) (n, most int) {
	first := 0 // of the second ending at times[n]
	for n < len(times) && !times[n].After(end) {
		for times[n].Sub(times[first]) >= time.Second {
			first++
		}
		most = max(most, n-first+1)
		n++
	}
	return n, most
}
