// The chat socket: connects, reconnects with backoff, resumes from the
// last sequence seen so nothing is missed or shown twice, and keeps sends
// made while disconnected until they are acknowledged.

// maxBackoffMs caps the wait between reconnects. The outages a page
// waits out behind a live load balancer are seconds long (a NATS node
// failing: its raft groups elect new leaders within 4-9 s, meanwhile
// handshakes are refused and resumes fail): a cap of 30 s turned those
// into 28-57 s without chat; 5 s keeps a page at most 5 s behind the
// system's return, at one attempt every 2.5-5 s per tab while it is down.
const maxBackoffMs = 5000;
// stormSpreadMs spreads the reconnects of sockets a gateway closed together.
const stormSpreadMs = 3000;

// retryAfterOf is, for a quota_exceeded error frame, in how many seconds
// the quota allows again: the frame's retry_after, or from a gateway that
// predates it, the "in N s" of its English message; null if neither says.
export function retryAfterOf(f) {
  if (Number.isFinite(f.retry_after) && f.retry_after >= 0) return f.retry_after;
  const m = /\bin (\d+) ?s\b/.exec(f.message || '');
  return m ? Number(m[1]) : null;
}

export class Connection {
  // handlers: onFrame(obj), onState('connected'|'reconnecting'|'offline'),
  // onLive(), onSessionEnd(closeCode), onAck(id, seq), onSendError(id, code,
  // message, retryAfter): a send refused for good, with the server's words
  // (and, on quota_exceeded, in how many seconds sending resumes).
  constructor(handlers) {
    this.h = handlers;
    this.ws = null;
    this.lastSeq = 0;          // highest message seq seen
    this.helloSeen = false;    // a hello came: later sockets resume, even from 0
    this.outbox = new Map();   // id -> send frame, until acked
    this.live = false;         // hello (and resumed) done: sends may go
    this.attempt = 0;
    this.stopped = false;
    this.timer = null;
    window.addEventListener('online', () => { if (!this.ws && !this.stopped) this.connect(); });
    window.addEventListener('offline', () => this.h.onState('offline'));
  }

  connect() {
    clearTimeout(this.timer);
    this.stopped = false;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${location.host}/ws`);
    this.ws = ws;
    this.live = false;
    let resuming = false;
    ws.onopen = () => {
      // resume must be the first frame: replay comes before anything live.
      // After any hello, even of an empty stream (seq 0), a reconnect
      // resumes: what was stored while away is replayed, not lost.
      if (this.helloSeen) {
        resuming = true;
        ws.send(JSON.stringify({ type: 'resume', after: this.lastSeq }));
      }
    };
    ws.onmessage = (ev) => {
      for (const line of String(ev.data).split('\n')) {
        if (!line) continue;
        let f;
        try { f = JSON.parse(line); } catch { continue; }
        if (f.type === 'hello') {
          this.helloSeen = true;
          this.attempt = 0;
          this.h.onState('connected');
          // Everything up to hello's seq is history, fetched per
          // conversation; a later resume starts after it.
          if (!resuming) {
            this.lastSeq = Math.max(this.lastSeq, f.seq || 0);
            this.goLive();
          }
        } else if (f.type === 'resumed') {
          this.goLive();
        } else if (f.type === 'message' && f.seq > this.lastSeq) {
          this.lastSeq = f.seq;
        } else if (f.type === 'ack') {
          this.outbox.delete(f.id);
          this.h.onAck(f.id, f.seq);
          continue;
        } else if (f.type === 'error' && f.id && this.outbox.has(f.id)) {
          if (f.code === 'unavailable' || f.code === 'rate_limited') {
            this.retryLater(f.id);
          } else {
            this.outbox.delete(f.id);
            this.h.onSendError(f.id, f.code, f.message, retryAfterOf(f));
          }
          continue;
        }
        this.h.onFrame(f);
      }
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.live = false;
      // Revoked (logout elsewhere) or expired: a new login is needed.
      if (ev.code === 4001 || ev.code === 4002 || ev.code === 1008) {
        this.stopped = true;
        this.h.onSessionEnd(ev.code);
        return;
      }
      if (this.stopped) return;
      this.h.onState(navigator.onLine === false ? 'offline' : 'reconnecting');
      // A whole gateway's sockets close at once when it stops (1001) or
      // lost NATS (4011): spread their first reconnect over a few
      // seconds instead of all arriving together.
      const storm = ev.code === 1001 || ev.code === 4011;
      const delay = storm && this.attempt === 0
        ? Math.random() * stormSpreadMs
        : Math.min(maxBackoffMs, 500 * 2 ** this.attempt) * (0.5 + Math.random() / 2);
      this.attempt++;
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }

  goLive() {
    this.live = true;
    for (const frame of this.outbox.values()) this.ws.send(JSON.stringify(frame));
    this.h.onLive();
  }

  retryLater(id) {
    setTimeout(() => {
      const frame = this.outbox.get(id);
      if (frame && this.live) this.ws.send(JSON.stringify(frame));
    }, 2000);
  }

  // send queues a message; it goes now if connected, else on reconnect
  // with the same id, which the server stores once.
  send(frame) {
    this.outbox.set(frame.id, frame);
    if (this.live) this.ws.send(JSON.stringify(frame));
  }

  // request sends a frame that is pointless to keep while disconnected.
  request(frame) {
    if (this.live) this.ws.send(JSON.stringify(frame));
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.outbox.clear();
    this.lastSeq = 0;
    this.helloSeen = false;
  }
}
