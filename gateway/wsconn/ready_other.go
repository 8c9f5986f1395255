//go:build !linux

package wsconn

// readiness is not available here: every served socket gets a reader
// goroutine of its own (see serve.go).
type readiness struct{}

func newReadiness() (*readiness, error) { return nil, errNoReadiness }
func (*readiness) close()               {}
func (*readiness) add(*Conn) error      { return errNoReadiness }
func (*readiness) arm(*Conn) error      { return errNoReadiness }
func (*readiness) remove(*Conn)         {}
func (*readiness) served() int          { return 0 }
