package chaos

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Result is one scenario's counts, as the clients saw them.
type Result struct {
	Scenario string
	Seed     uint64
	Clients  int
	// Sent sends were made; Acked of them acknowledged; Unacked never
	// were by the end (a send the clients still retry), Refused were
	// refused for good (an error the page does not retry).
	Sent, Acked, Unacked, Refused int
	// Lost: (acknowledged message, recipient) pairs never delivered.
	// Duplicated: deliveries past the first, plus sends stored twice.
	// OutOfOrder: deliveries below a seq already seen in the same
	// conversation. Leaked: direct messages shown to a third user.
	// Phantom: deliveries of a seq no client had acked, or not the
	// message acked at that seq.
	Lost, Duplicated, OutOfOrder, Leaked, Phantom int
	// Recover: from a socket's end to the next one live (hello, or
	// resumed when resuming); Ack: from a send to its ack, retries
	// included; Delivery: from a send to its receipt, while measured.
	Recovers               int
	RecoverP99, RecoverMax time.Duration
	AckP99, AckMax         time.Duration
	DeliveryP99            time.Duration
	Notes                  []string
}

// Check counts what the ledger recorded. Call it once the load is over
// and deliveries have settled.
func (l *Ledger) Check(scenario string, seed uint64) Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := Result{Scenario: scenario, Seed: seed, Clients: len(l.clients), Duplicated: l.doubleStored}
	lostBy := map[uint64]int{} // seq -> clients that never got it
	for k, s := range l.sends {
		r.Sent++
		switch {
		case s.refused != "":
			r.Refused++
			continue
		case s.seq == 0:
			r.Unacked++
			continue
		}
		r.Acked++
		for _, i := range l.recipientsLocked(k.user, s.to) {
			c := l.clients[i]
			if s.seq <= c.baseline {
				continue
			}
			switch n := c.counts[s.seq]; {
			case n == 0:
				r.Lost++
				lostBy[s.seq]++
				if r.Lost <= 3 {
					l.noteLocked(fmt.Sprintf("lost: seq %d (%s/%s to %+v, sent %s, acked %s) never reached client %d: %s",
						s.seq, k.user, k.id, s.to, s.at.Format(clock), s.ackAt.Format(clock), i, c.client.state()))
				}
			case n > 1:
				r.Duplicated += n - 1
			}
		}
	}
	for _, c := range l.clients {
		r.OutOfOrder += c.ooo
		r.Leaked += c.leaked
		for seq, d := range c.meta {
			if k, ok := l.bySeq[seq]; !ok || k.id != d.ID || k.user != d.From {
				r.Phantom++
			}
		}
	}
	if len(lostBy) > 0 {
		seqs := slices.Sorted(maps.Keys(lostBy))
		var b strings.Builder
		for _, q := range seqs[:min(len(seqs), 40)] {
			fmt.Fprintf(&b, " %d(x%d)", q, lostBy[q])
		}
		r.Notes = append(r.Notes, fmt.Sprintf("%d seqs lost, seq(clients missing it):%s", len(seqs), b.String()))
	}
	r.Recovers = len(l.recover)
	r.RecoverP99, r.RecoverMax = percentile(l.recover, .99), percentile(l.recover, 1)
	r.AckP99, r.AckMax = percentile(l.ackLat, .99), percentile(l.ackLat, 1)
	r.DeliveryP99 = percentile(l.delivLat, .99)
	r.Notes = append(slices.Clone(l.notes), r.Notes...)
	for _, s := range l.slow {
		r.Notes = append(r.Notes, s.story)
	}
	return r
}

// DeliveryP99 is the p99 of the delivery latencies recorded so far; Reset
// forgets them.
func (l *Ledger) DeliveryP99() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return percentile(l.delivLat, .99)
}

// ResetLatencies forgets the delivery latencies recorded so far.
func (l *Ledger) ResetLatencies() {
	l.mu.Lock()
	l.delivLat = nil
	l.mu.Unlock()
}

// percentile is the q quantile of d (1: the maximum), 0 for none.
func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// Clean reports whether nothing was lost, duplicated, out of order,
// leaked, phantom or left unacknowledged.
func (r Result) Clean() bool {
	return r.Lost == 0 && r.Duplicated == 0 && r.OutOfOrder == 0 && r.Leaked == 0 && r.Phantom == 0 && r.Unacked == 0
}

// TableHeader is the heading of the scenario table, in Markdown.
const TableHeader = "| scenario | seed | clients | acked | lost | duplicated | out of order | leaked | phantom | unacked | recover p99 / max | ack p99 / max |\n" +
	"| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"

// Row is the result's line of the scenario table.
func (r Result) Row() string {
	return fmt.Sprintf("| %s | %d | %d | %d | %d | %d | %d | %d | %d | %d | %s / %s | %s / %s |\n",
		r.Scenario, r.Seed, r.Clients, r.Acked, r.Lost, r.Duplicated, r.OutOfOrder, r.Leaked, r.Phantom, r.Unacked,
		ms(r.RecoverP99), ms(r.RecoverMax), ms(r.AckP99), ms(r.AckMax))
}

// Summary is the result in a few lines, with its notes, for the log.
func (r Result) Summary() string {
	var b strings.Builder
	b.WriteString(TableHeader)
	b.WriteString(r.Row())
	fmt.Fprintf(&b, "sent %d, refused %d, recoveries %d, delivery p99 %s\n", r.Sent, r.Refused, r.Recovers, ms(r.DeliveryP99))
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	return b.String()
}

// clock is how reports show times of day.
const clock = "15:04:05.000"

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}
