package main

import (
	"slices"
	"sync"
	"time"
)

// presenceMeter counts what presence costs each socket of a connect
// storm: the size of its first presence object (the online list, or in
// partial mode its contacts and the total) and how many presence and
// online_count objects, and websocket frames holding them, follow until
// the storm ends. The objects of one frame share its read time. Memory
// per socket is bounded by what it gets in one second.
type presenceMeter struct {
	mu    sync.Mutex
	end   time.Time // when set, later frames are not counted
	socks []presenceSocket
}

type presenceSocket struct {
	hello           time.Time
	first           int       // bytes of the first presence object; 0 before it
	lastAt          time.Time // read time of the last presence object: its frame's
	objects, frames secondCounter
}

// secondCounter counts events and the most of them within one second;
// events come in order.
type secondCounter struct {
	n, most int
	window  []time.Time // the events of the last second
}

func (s *secondCounter) add(at time.Time) {
	s.n++
	i := 0
	for i < len(s.window) && at.Sub(s.window[i]) >= time.Second {
		i++
	}
	s.window = append(s.window[i:], at)
	s.most = max(s.most, len(s.window))
}

func newPresenceMeter(sockets int) *presenceMeter {
	return &presenceMeter{socks: make([]presenceSocket, sockets)}
}

// frame records socket i's frame f, read at at.
func (m *presenceMeter) frame(i int, f frame, at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.end.IsZero() && at.After(m.end) {
		return
	}
	s := &m.socks[i]
	switch {
	case f.Type == "hello":
		s.hello = at
	case f.Type == "presence" && s.first == 0:
		s.first, s.lastAt = f.Size, at
	case f.Type == "presence" || f.Type == "online_count":
		if !s.lastAt.Equal(at) { // else it shares the frame of the one before
			s.frames.add(at)
		}
		s.objects.add(at)
		s.lastAt = at
	}
}

// figures ends the count at end and reports the first objects' sizes
// (median and largest, KiB, of the sockets that had one) and, of the
// objects and of the frames after them: how many per socket-second
// online (each socket counted from its hello), and the most any socket
// got within one second.
func (m *presenceMeter) figures(end time.Time) map[string]float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.end = end
	var firsts []int
	var objects, frames, busiestObjects, busiestFrames int
	var online time.Duration
	for _, s := range m.socks {
		if s.hello.IsZero() {
			continue
		}
		if s.first > 0 {
			firsts = append(firsts, s.first)
		}
		online += end.Sub(s.hello)
		objects, busiestObjects = objects+s.objects.n, max(busiestObjects, s.objects.most)
		frames, busiestFrames = frames+s.frames.n, max(busiestFrames, s.frames.most)
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
