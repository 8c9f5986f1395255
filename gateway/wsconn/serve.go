package wsconn

import (
	"errors"
	"time"

	"github.com/gorilla/websocket"
)

// An idle socket should cost as little as possible, and a goroutine
// parked per socket costs 2 to 4 KiB (its stack and record) whatever it
// waits in. So a served socket has no goroutine of its own while
// nothing arrives: the Server's readiness loop watches the idle
// sockets' descriptors (epoll, one-shot) and starts a reader run for a
// socket when it has bytes. A run reads and hands over the messages
// that are there, then ends, re-arming the watch, once the socket has
// nothing more to read; only a message that arrives in pieces keeps it,
// parked in the runtime's poller until the rest comes (read.go). With
// no goroutine waiting on a read deadline, the pinger finds the silent
// sockets (Conn.silent). Where the loop is not available the socket
// gets a reader goroutine for its whole life instead: the behaviour is
// the same, an idle socket costs more.

// errNoReadiness: no readiness loop here, or it has stopped.
var errNoReadiness = errors.New("wsconn: no readiness loop")

// errIdle ends a reader run: the socket has nothing more to read now.
var errIdle = errors.New("wsconn: nothing to read now")

// Serve hands the socket's messages to onMessage, one at a time and in
// order (never two at once), and calls onEnd once, after the socket has
// ended (Done) and onMessage has returned for the last time: the place
// for the socket's cleanup. Call it once, after Upgrade, instead of
// reading with Read.
func (c *Conn) Serve(onMessage func(data []byte, text bool), onEnd func()) {
	c.qmu.Lock()
	c.onMessage, c.onEnd = onMessage, onEnd
	ended := c.endedUnserved()
	c.qmu.Unlock()
	if ended { // closed before it was served: nothing to read
		go onEnd()
		return
	}
	if c.srv.ready.add(c) != nil {
		go c.readAll()
	}
}

// startRun claims the socket's reads for one run; false if a run holds
// them or the socket has ended. The claim (under qmu) also orders one
// run's reader state before the next's.
func (c *Conn) startRun() bool {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.reading || c.ended {
		return false
	}
	c.reading = true
	return true
}

// stopRun gives the reads back; true if the socket has ended meanwhile,
// and the caller now owes its onEnd.
func (c *Conn) stopRun() bool {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	c.reading = false
	return c.endedUnserved()
}

// endedUnserved says, once, that the socket has ended with no run
// reading it and onEnd not yet called; the caller calls it (qmu held).
func (c *Conn) endedUnserved() bool {
	if !c.ended || c.reading || c.onEnd == nil || c.endCalled {
		return false
	}
	c.endCalled = true
	return true
}

// run is one reader run, started by the readiness loop: the messages
// that are there, then the watch re-armed, or onEnd if the socket ended.
func (c *Conn) run() {
	for {
		data, text, err := c.read(true)
		if err == nil {
			c.onMessage(data, text)
			continue
		}
		if c.stopRun() {
			c.onEnd()
			return
		}
		if errors.Is(err, errIdle) && c.srv.ready.arm(c) != nil {
			// Not watched: the connection is closing (its reads fail at
			// once), or the loop is gone. Either way a reader of its own
			// finds out.
			go c.readAll()
		}
		return
	}
}

// readAll reads the socket for the rest of its life, on a goroutine of
// its own: where there is no readiness loop.
func (c *Conn) readAll() {
	if !c.startRun() {
		return
	}
	for {
		data, text, err := c.Read()
		if err != nil {
			break
		}
		c.onMessage(data, text)
	}
	if c.stopRun() {
		c.onEnd()
	}
}

// silent says whether the client has sent nothing, not even a pong, for
// the silence limit, with nothing of it waiting to be read: a run would
// have noted a pong that came.
func (c *Conn) silent() bool {
	if time.Since(time.Unix(0, c.heardAt.Load())) < c.silentFor() {
		return false
	}
	return !c.bytesWaiting()
}

// closeSilent closes a silent socket as its reader would on a passed
// deadline.
func (c *Conn) closeSilent() { c.Close(websocket.CloseNormalClosure, "") }
