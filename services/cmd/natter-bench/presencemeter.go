package main

import (
	"slices"
	"sync"
	"time"
)

// presenceMeter counts what presence costs each socket of a connect
// storm: the size of its first presence object (the online list, or in
// partial mode its contacts and the total) and how many presence and
// online_count objects follow while the storm lasts. Each socket's entry
// is written by its own reader only.
type presenceMeter struct {
	mu    sync.Mutex
	socks []presenceSocket
}

type presenceSocket struct {
	hello time.Time
	first int         // bytes of the first presence object; 0 before it
	later []time.Time // presence and online_count objects after the first
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
		s.later = append(s.later, at)
	}
}

// figures are the first objects' sizes (median and largest, KiB) and the
// objects after them up to end: per socket-second online (each socket
// counted from its hello), and the most any socket got within one second.
func (m *presenceMeter) figures(end time.Time) map[string]float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var firsts []int
	var objects, busiest int
	var online time.Duration
	for _, s := range m.socks {
		if s.hello.IsZero() {
			continue
		}
		firsts = append(firsts, s.first)
		online += end.Sub(s.hello)
		n := 0
		for j, at := range s.later {
			if at.After(end) {
				break
			}
			n++
			// objects within the second that ends at this one
			k := j
			for k > 0 && at.Sub(s.later[k-1]) < time.Second {
				k--
			}
			busiest = max(busiest, j-k+1)
		}
		objects += n
	}
	if len(firsts) == 0 {
		return map[string]float64{}
	}
	slices.Sort(firsts)
	fig := map[string]float64{
		"presence_first_kib_p50":      float64(firsts[len(firsts)/2]) / 1024,
		"presence_first_kib_max":      float64(firsts[len(firsts)-1]) / 1024,
		"presence_busiest_second":     float64(busiest),
		"presence_objects_per_sock_s": 0,
	}
	if online > 0 {
		fig["presence_objects_per_sock_s"] = float64(objects) / online.Seconds()
	}
	return fig
}
