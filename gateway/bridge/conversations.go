package bridge

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
)

// Conversations, as the stream has them: a user's direct conversations
// are the CHAT subjects with their id on either side (the stream keeps
// them, so nothing else has to), each one's latest message its last on
// that subject; the lobby is everyone's.
const (
	// conversationsPage is the most items one conversations frame holds.
	conversationsPage = 100
	// conversationReads bounds one listing's concurrent stream reads.
	conversationReads = 32
	// maxListings bounds the listings a gateway runs at once: in a
	// connect storm each socket's waits its turn rather than every one
	// reading the stream together.
	maxListings = 64
)

// sendConversations sends c a page of its user's conversations: after
// hello (before 0), or when the client asks for the next (before the
// last item's last.seq). It waits at most listingWait for a turn (then
// unavailable), and gives up when the socket closes.
func (g *Gateway) sendConversations(c *client, id string, before uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), listingWait+readTimeout)
	defer cancel()
	go func() { // the listing ends with the socket
		select {
		case <-c.conn.Closing():
			cancel()
		case <-ctx.Done():
		}
	}()
	wait := time.NewTimer(listingWait)
	defer wait.Stop()
	select {
	case g.listings <- struct{}{}:
		defer func() { <-g.listings }()
	case <-wait.C:
		c.reply(errorFrame(id, chat.CodeUnavailable, "the gateway is busy listing conversations; ask again"))
		return
	case <-ctx.Done():
		return // the socket closed
	}
	items, more, err := g.listConversations(ctx, c.user.ID, before)
	if err != nil {
		if !c.conn.IsClosing() {
			g.log.Warn("conversations not listed", "user", c.user.ID, "err", err)
			c.reply(errorFrame(id, chat.CodeUnavailable, "could not list your conversations; ask again"))
		}
		return
	}
	c.reply(chat.ConversationsFrame{Type: chat.FrameConversations, ID: id, Items: items, More: more})
}

// listingWait bounds how long a listing waits for its turn.
const listingWait = 5 * time.Second

// handleConversations answers a client's request for a page, off the
// reader (a listing takes stream round trips), one at a time per socket;
// it costs HistoryCost of the send rate, as a history page does.
func (g *Gateway) handleConversations(c *client, f chat.ClientFrame) {
	if !c.charge(f.ID, "conversations") {
		return
	}
	if !c.listing.CompareAndSwap(false, true) {
		c.reply(errorFrame(f.ID, chat.CodeRateLimited, "a conversations request of this socket is under way"))
		return
	}
	go func() {
		defer c.listing.Store(false)
		g.sendConversations(c, f.ID, f.Before)
	}()
}

// listConversations is user's page of conversations whose latest message
// is before "before" (0: from the latest), most recent first, and whether
// older ones follow. The lobby counts as active at its latest message
// (last of all when it has none).
func (g *Gateway) listConversations(ctx context.Context, user string, before uint64) ([]chat.Conversation, bool, error) {
	counts, err := g.userSubjects(ctx, user)
	if err != nil {
		return nil, false, err
	}
	items, err := g.lastMessages(ctx, user, slices.Collect(maps.Keys(counts)))
	if err != nil {
		return nil, false, err
	}
	slices.SortFunc(items, func(a, b chat.Conversation) int { return cmp.Compare(lastSeq(b), lastSeq(a)) })
	if before > 0 {
		items = slices.DeleteFunc(items, func(it chat.Conversation) bool { return lastSeq(it) >= before })
	}
	more := len(items) > conversationsPage
	items = items[:min(len(items), conversationsPage)]
	if err := g.readState(ctx, user, items, counts); err != nil {
		return nil, false, err
	}
	g.seenState(ctx, user, items)
	g.titles(ctx, user, items)
	return items, more, nil
}

func lastSeq(it chat.Conversation) uint64 {
	if it.Last == nil {
		return 0
	}
	return it.Last.Seq
}

// userSubjects is how many messages the stream holds on the lobby's
// subject, on each other room's of user and on each of their direct
// conversations' (reads of the stream's own subject index: two for the
// direct ones, one per room, a few at a time).
func (g *Gateway) userSubjects(ctx context.Context, user string) (map[string]uint64, error) {
	lobby, _ := chat.RoomSubject(chat.Lobby)
	filters := []string{lobby, dmPrefixStored + user + ".*", dmPrefixStored + "*." + user}
	all := map[string]uint64{lobby: 0}
	for _, r := range g.hub.roomsOf(user) {
		s, _ := chat.RoomSubject(r)
		filters = append(filters, s)
		all[s] = 0 // listed even before its first message
	}
	counts := make([]map[string]uint64, len(filters))
	errs := make([]error, len(filters))
	sem := make(chan struct{}, conversationReads)
	var wg sync.WaitGroup
	for i, filter := range filters {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			counts[i], errs[i] = g.subjectCounts(ctx, filter)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, c := range counts {
		maps.Copy(all, c) // a note to self matches both dm filters
	}
	return all, nil
}

// dmPrefixStored starts the stored subjects of direct messages.
const dmPrefixStored = "chat.dm."

// lastMessages reads each subject's latest message into one
// conversation each (a room with no message has no last): one batch
// direct get (ADR-31's multi_last) per lastBatchSize subjects, where 200
// conversations used to take 200 round trips. A batch the server cut
// short (its max_pending in bytes) has the rest read one by one.
func (g *Gateway) lastMessages(ctx context.Context, user string, subjects []string) ([]chat.Conversation, error) {
	last := make(map[string]*chat.LastMessage, len(subjects))
	for start := 0; start < len(subjects); start += lastBatchSize {
		batch := subjects[start:min(start+lastBatchSize, len(subjects))]
		cut, err := g.lastBatch(ctx, batch, last)
		if err != nil {
			return nil, err
		}
		for _, s := range batch {
			if _, ok := last[s]; cut && !ok {
				if last[s], err = g.lastMessage(ctx, s); err != nil {
					return nil, err
				}
			}
		}
	}
	items := make([]chat.Conversation, len(subjects))
	for i, s := range subjects {
		items[i] = chat.Conversation{To: subjectTo(user, s), Last: last[s]}
	}
	return items, nil
}

// lastBatchSize is the most subjects one batch get asks for (the server
// answers at most 1,024).
const lastBatchSize = 256

// lastBatch asks the stream for the latest message of each subject at
// once; the answers come one message each, then an end-of-batch status
// (204; with messages still pending if the server cut the batch short,
// then cut is true), or 404 No Results when none of them has a message.
//
// The answers come to a channel of the batch's size: a sync subscription
// would allocate nats.go's default 64k-slot channel (512 KiB) on every
// socket's handshake, which in a connect storm was a fifth of the
// gateway's CPU in allocation and collection. (A connection closed
// meanwhile is noticed at ctx's deadline, not at once.)
func (g *Gateway) lastBatch(ctx context.Context, subjects []string, into map[string]*chat.LastMessage) (cut bool, err error) {
	inbox := g.nc.NewInbox()
	answers := make(chan *nats.Msg, len(subjects)+1) // a message each, then the end
	sub, err := g.nc.ChanSubscribe(inbox, answers)
	if err != nil {
		return false, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	req, _ := json.Marshal(map[string]any{"multi_last": subjects, "batch": len(subjects)})
	if err := g.nc.PublishRequest("$JS.API.DIRECT.GET."+chat.StreamName, inbox, req); err != nil {
		return false, err
	}
	for got := 0; ; got++ {
		var m *nats.Msg
		select {
		case m = <-answers:
		case <-ctx.Done():
			return false, fmt.Errorf("last messages: %w", ctx.Err())
		}
		switch status := m.Header.Get("Status"); {
		case status == "204":
			return m.Header.Get("Nats-Num-Pending") != "" && m.Header.Get("Nats-Num-Pending") != "0", nil
		case status == "404" && got == 0:
			return false, nil // none of them has a message
		case status != "":
			return false, fmt.Errorf("last messages: status %s %s", status, m.Header.Get("Description"))
		}
		seq, _ := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		into[m.Header.Get(jetstream.SubjectHeader)] = preview(m.Data, seq)
	}
}

// subjectTo is the conversation of stored subject s, as user sees it.
func subjectTo(user, s string) chat.To {
	if rest, ok := strings.CutPrefix(s, dmPrefixStored); ok {
		a, b, _ := strings.Cut(rest, ".")
		if a == user {
			return chat.To{User: b}
		}
		return chat.To{User: a}
	}
	return chat.To{Room: strings.TrimPrefix(s, "chat.room.")}
}

// lastMessage is subject's latest message, its text cut for a preview.
func (g *Gateway) lastMessage(ctx context.Context, subject string) (*chat.LastMessage, error) {
	raw, err := g.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return preview(raw.Data, raw.Sequence), nil
}

// preview is a stored message as a conversation's latest, its text cut.
func preview(data []byte, seq uint64) *chat.LastMessage {
	var m chat.Message
	if err := json.Unmarshal(data, &m); err != nil {
		return &chat.LastMessage{Seq: seq} // undecodable: shown without a preview
	}
	text := m.Text
	if r := []rune(text); len(r) > chat.PreviewChars {
		text = string(r[:chat.PreviewChars])
	}
	return &chat.LastMessage{Seq: seq, From: m.From, Text: text, TS: m.TS}
}

// readState fills each item's cursor and what is unread after it: the
// conversation's count now less the count at the cursor.
func (g *Gateway) readState(ctx context.Context, user string, items []chat.Conversation, counts map[string]uint64) error {
	read, err := g.cursors.all(ctx, user)
	if err != nil {
		return err
	}
	for i := range items {
		it := &items[i]
		at := read[convKey(it.To)]
		it.Read = at.Seq
		if n := counts[conversationSubject(user, &it.To)]; n > at.N {
			it.Unread = n - at.N
		}
		// Sending is reading (sentReads): a conversation whose latest
		// message is the user's own is read, even before the background
		// move of their cursor has landed.
		if it.Last != nil && it.Last.From.ID == user {
			it.Read, it.Unread = max(it.Read, it.Last.Seq), 0
		}
	}
	return nil
}

// seenState fills each direct conversation's Seen: how far the other
// person has read it (one read of their cursors each, a few at a time;
// left at 0 when it cannot be read, as if unread).
func (g *Gateway) seenState(ctx context.Context, user string, items []chat.Conversation) {
	sem := make(chan struct{}, conversationReads)
	var wg sync.WaitGroup
	for i := range items {
		other := items[i].To.User
		if other == "" || other == user {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			items[i].Seen = g.cursors.seq(ctx, other, convKey(chat.To{User: user}))
		})
	}
	wg.Wait()
}

// seq is user's cursor of conversation key, 0 when it cannot be read.
// Only that cursor is decoded: a busy user's entry holds up to maxCursors,
// and a list of 150 direct conversations reads 150 entries. Keys are
// plain ids (no escapes), so the key, quoted, followed by ':' only
// occurs as that key.
func (cs cursors) seq(ctx context.Context, user, key string) uint64 {
	e, err := cs.kv.Get(ctx, user)
	if err != nil {
		return 0
	}
	quoted, _ := json.Marshal(key)
	raw := e.Value()
	i := bytes.Index(raw, append(quoted, ':'))
	if i < 0 {
		return 0
	}
	var c cursor
	if json.NewDecoder(bytes.NewReader(raw[i+len(quoted)+1:])).Decode(&c) != nil {
		return 0
	}
	return c.Seq
}

// titles names each conversation: a room by its name (its id while this
// gateway has not heard of it), a direct one by the other person (from
// auth; their id if auth cannot say).
func (g *Gateway) titles(ctx context.Context, user string, items []chat.Conversation) {
	var ids []string
	for _, it := range items {
		if it.To.User != "" {
			ids = append(ids, it.To.User)
		}
	}
	users, err := g.auth.Users(ctx, ids)
	if err != nil {
		g.log.Warn("conversation titles: user lookup failed", "err", err)
	}
	for i := range items {
		it := &items[i]
		switch {
		case it.To.Room == chat.Lobby:
			it.Title = "Lobby"
		case it.To.Room != "":
			it.Title = it.To.Room
			if r, ok := g.roomDir.get(it.To.Room); ok {
				it.Title, it.Room = r.Name, &r
			}
		default:
			u, ok := users[it.To.User]
			if !ok {
				u = chat.User{ID: it.To.User, Name: it.To.User}
			}
			it.User, it.Title = &u, u.Name
		}
	}
}

// conversation is one conversation of user as a fresh list shows it.
func (g *Gateway) conversation(ctx context.Context, user string, to chat.To) (*chat.Conversation, error) {
	subject := conversationSubject(user, &to)
	counts, err := g.subjectCounts(ctx, subject)
	if err != nil {
		return nil, err
	}
	last, err := g.lastMessage(ctx, subject)
	if err != nil {
		return nil, err
	}
	items := []chat.Conversation{{To: to, Last: last}}
	if err := g.readState(ctx, user, items, counts); err != nil {
		return nil, err
	}
	g.titles(ctx, user, items)
	return &items[0], nil
}

// contacts is the people whose presence matters to user: the other
// people of their direct conversations (in no order), then the members
// of their rooms of up to chat.PresenceRoomMembers, smallest rooms first,
// at most contactRooms of them; PRESENCE_LIST_MAX distinct people at
// most.
func (g *Gateway) contacts(ctx context.Context, user string) ([]string, error) {
	seen := map[string]bool{user: true}
	var ids []string
	add := func(id string) {
		if !seen[id] && len(ids) < g.limits.PresenceListMax {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	for _, filter := range []string{dmPrefixStored + user + ".*", dmPrefixStored + "*." + user} {
		counts, err := g.subjectCounts(ctx, filter)
		if err != nil {
			return nil, err
		}
		for s := range counts {
			add(subjectTo(user, s).User)
		}
	}
	rooms := g.hub.roomsOf(user)
	size := func(r string) int { info, _ := g.roomDir.get(r); return info.Members }
	slices.SortFunc(rooms, func(a, b string) int { return cmp.Compare(size(a), size(b)) })
	for i, r := range rooms {
		if i >= contactRooms || len(ids) >= g.limits.PresenceListMax || size(r) > chat.PresenceRoomMembers {
			break
		}
		members, err := g.memberIDs(ctx, r)
		if err != nil {
			return nil, err
		}
		for _, id := range members {
			add(id)
		}
	}
	return ids, nil
}

// contactRooms bounds the rooms one contacts read lists the members of.
const contactRooms = 20
