package bridge

import (
	"sync"
	"time"

	"github.com/natter/natter/gateway/wsconn"
)

// recorder is a socket without a connection: it keeps what it is sent
// (or only counts it), for tests and benchmarks of the hub's fan-out.
// The websocket side has tests of its own (wsconn).
type recorder struct {
	mu      sync.Mutex
	count   bool // count only: keep no frames
	frames  [][]byte
	sent    int
	closing chan struct{}
	once    sync.Once
	code    int
	onEnd   func()
}

func newRecorder() *recorder { return &recorder{closing: make(chan struct{})} }

// Serve reads nothing; the socket ends when it is closed.
func (r *recorder) Serve(_ func([]byte, bool), onEnd func()) {
	r.mu.Lock()
	r.onEnd = onEnd
	r.mu.Unlock()
}

func (r *recorder) Send(b []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent++
	if !r.count {
		r.frames = append(r.frames, b)
	}
	return true
}

func (r *recorder) SendIn(b []byte, _ *wsconn.Lineup) bool { return r.Send(b) }
func (r *recorder) SendWait(b []byte) bool                 { return r.Send(b) }
func (r *recorder) CloseTooSlow()                          { r.Close(4009, "too slow") }
func (r *recorder) WaitHalf(time.Time) bool                { return !r.IsClosing() }
func (r *recorder) Closing() <-chan struct{}               { return r.closing }

func (r *recorder) Close(code int, _ string) {
	r.once.Do(func() {
		r.code = code
		close(r.closing)
		r.mu.Lock()
		onEnd := r.onEnd
		r.mu.Unlock()
		if onEnd != nil {
			go onEnd() // as a socket's: never on the goroutine that closed it
		}
	})
}

func (r *recorder) CloseCode() int {
	<-r.closing
	return r.code
}

// sentFrames is what r was sent so far.
func (r *recorder) sentFrames() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte{}, r.frames...)
}

func (r *recorder) IsClosing() bool {
	select {
	case <-r.closing:
		return true
	default:
		return false
	}
}
