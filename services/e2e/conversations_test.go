package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/natter/natter/services/poll"
)

// Conversations and read state as the server keeps them: the list comes
// from the server (a reload or another device forgets nothing), unread
// counts agree on every device, a direct conversation says what the other
// person has seen, and a refused send says why.

// registerOnly registers an account through the API: its user id.
func registerOnly(t *testing.T, gateway, account, name, password string) string {
	t.Helper()
	r := postJSON(t, gateway+"/api/register", fmt.Sprintf(`{"account":%q,"password":%q,"name":%q}`, account, password, name), "")
	var body struct{ User struct{ ID string } }
	if err := json.Unmarshal([]byte(r.body), &body); r.status != http.StatusCreated || err != nil || body.User.ID == "" {
		t.Fatalf("register %s: %d %s", account, r.status, r.body)
	}
	return body.User.ID
}

// say sends text from the socket to "to" (a JSON object) and waits for
// its ack, so messages sent one after another are stored in that order.
func (s *chatSocket) say(t *testing.T, id, to, text string) {
	t.Helper()
	f, _ := json.Marshal(map[string]any{"type": "send", "id": id, "to": json.RawMessage(to), "text": text})
	s.send(t, string(f))
	s.waitFor(t, "ack of "+id, func(o map[string]any) bool {
		if o["type"] == "error" && o["id"] == id {
			t.Fatalf("send %s refused: %v", id, o)
		}
		return o["type"] == "ack" && o["id"] == id
	})
}

func toUser(id string) string { return fmt.Sprintf(`{"user":%q}`, id) }

// convKeysJS lists the conversation list's entries, top to bottom.
const convKeysJS = `[...document.querySelectorAll('#conv-list .conv')].map(b => b.dataset.key)`

// badgeJS is the unread badge of the conversation key in the list, empty
// when it has none.
func badgeJS(key string) string {
	return `((document.querySelector('#conv-list .conv[data-key="` + key + `"] .unread') || {}).textContent || '')`
}

// openListed opens a conversation from the list (the drawer on a phone).
func (b *browser) openListed(t *testing.T, key string) {
	t.Helper()
	if eval[bool](t, b, `getComputedStyle(document.querySelector('#toggle-side')).display !== 'none'`) {
		b.do(t, chromedp.Click(chromedp.ID("toggle-side")))
		b.waitJS(t, "drawer open", `getComputedStyle(document.querySelector('#side')).display !== 'none'`)
	}
	// The list is drawn again as frames arrive (the conversations after a
	// reload, presence): a click on an item replaced meanwhile opens
	// nothing, so it is clicked again until the conversation is open, as
	// a person would.
	b.waitJS(t, "open "+key, `(() => {
	  const el = document.querySelector('#conv-list .conv[data-key="`+key+`"]');
	  if (el === null) return false;
	  if (el.getAttribute('aria-current') === 'true') return true;
	  el.click();
	  return false;
	})()`)
}

// viewport sets a laptop's or a phone's screen, on a page already loaded.
func (b *browser) viewport(t *testing.T, w, h int64) {
	t.Helper()
	opts := []chromedp.EmulateViewportOption{}
	if w < 700 {
		opts = append(opts, chromedp.EmulateMobile)
	}
	b.do(t, chromedp.EmulateViewport(w, h, opts...))
	b.waitJS(t, fmt.Sprintf("viewport %dx%d", w, h), fmt.Sprintf(`document.documentElement.clientWidth === %d`, w))
}

// checkClean fails on axe findings and console errors.
func (b *browser) checkClean(t *testing.T, axe, when string) {
	t.Helper()
	if v := b.axeViolations(t, axe); len(v) > 0 {
		t.Errorf("%s, %s: axe: %v", b.name, when, v)
	}
	if e := b.takeErrors(); len(e) > 0 {
		t.Errorf("%s, %s: console errors: %v", b.name, when, e)
	}
}

// TestBrowserConversationList: alice has talked privately with 113
// people, 200 messages with bob, 30 with carol, one each with most. She
// reloads the page: every conversation is in the list, most recent first
// (the first hundred at once, the rest a button away), and bob's, though
// he is offline, opens at its newest message and pages back to its first.
func TestBrowserConversationList(t *testing.T) {
	const (
		fanCount = 110
		bobTalk  = 200
		pw       = "many-rooms-2026"
	)
	// Seeding sockets are not held to a person's typing rate, and 110
	// accounts come from one address.
	s := startBrowserStackWith(t, []string{"REGISTRATIONS_PER_ADDRESS=1000"},
		"SEND_RATE=1000", "SEND_BURST=1000", "USER_SENDS_PER_MINUTE=100000")
	axe := axeSource(t)
	gw := s.gateways[0]
	aliceID, aliceCookie := registerLogin(t, gw, "alice", "Alice", pw)
	bobID, bobCookie := registerLogin(t, gw, "bob", "Bob", pw)
	carolID, carolCookie := registerLogin(t, gw, "carol", "Carol", pw)
	daveID, daveCookie := registerLogin(t, gw, "dave", "Dave", pw)
	fans := make([]string, fanCount)
	for i := range fans {
		fans[i] = registerOnly(t, gw, fmt.Sprintf("fan%03d", i), fmt.Sprintf("Fan %03d", i), pw)
	}

	// Oldest first: the lobby, a note to each fan, dave's five, carol's
	// thirty, then bob's two hundred, turn by turn.
	alice, _ := dialChat(t, gw, aliceCookie, 0)
	bob, _ := dialChat(t, s.gateways[1], bobCookie, 0)
	carol, _ := dialChat(t, gw, carolCookie, 0)
	dave, _ := dialChat(t, s.gateways[1], daveCookie, 0)
	for i := range 5 {
		carol.say(t, fmt.Sprintf("lobby%d", i), `{"room":"lobby"}`, fmt.Sprintf("lobby %d", i))
	}
	for i, fan := range fans {
		alice.say(t, fmt.Sprintf("fan%d", i), toUser(fan), fmt.Sprintf("thanks for the note, fan %03d", i))
	}
	for i := range 5 {
		dave.say(t, fmt.Sprintf("dave%d", i), toUser(aliceID), fmt.Sprintf("dave %d", i))
	}
	for i := range 30 {
		if i%2 == 0 {
			carol.say(t, fmt.Sprintf("carol%d", i), toUser(aliceID), fmt.Sprintf("carol %02d", i))
		} else {
			alice.say(t, fmt.Sprintf("tocarol%d", i), toUser(carolID), fmt.Sprintf("to carol %02d", i))
		}
	}
	bobText := func(i int) string {
		s := fmt.Sprintf("bob talk %03d", i)
		if i%9 == 4 {
			s += "\n" + strings.Repeat("a longer thought that wraps over several lines, ", 5)
		}
		return s
	}
	for i := range bobTalk {
		if i%3 == 2 {
			alice.say(t, fmt.Sprintf("tobob%d", i), toUser(bobID), bobText(i))
		} else {
			bob.say(t, fmt.Sprintf("bob%d", i), toUser(aliceID), bobText(i))
		}
	}
	for _, c := range []*chatSocket{alice, bob, carol, dave} {
		c.close()
	}
	want := []string{"room:lobby", "user:" + bobID, "user:" + carolID, "user:" + daveID}
	for i := fanCount - 1; i >= 0; i-- {
		want = append(want, "user:"+fans[i])
	}

	page := newBrowser(t, "convs", gw)
	page.login(t, "alice", pw)
	page.viewport(t, 1280, 800)
	// The first hundred of the server's list (the lobby is always on
	// top), then the rest at the button.
	listed := func(n int) string {
		return convKeysJS + `.join(' ') === ` + js(strings.Join(want[:n], " "))
	}
	page.waitJS(t, "first page of conversations", listed(101))
	page.waitJS(t, "more button", `document.querySelector('#conv-more') !== null`)
	// Bob wrote last (199 is his turn): his conversation has unread
	// messages (how many: see TestConversationsUnreadCountsOthers); one
	// whose last message is alice's own has nothing unread for her.
	page.waitJS(t, "bob's unread", badgeJS("user:"+bobID)+` !== ''`)
	if got := eval[string](t, page, badgeJS("user:"+daveID)); got != "5" {
		t.Errorf("dave's conversation: unread %q, want 5", got)
	}
	if got := eval[string](t, page, badgeJS("user:"+fans[0])); got != "" {
		t.Errorf("a conversation alice wrote last: unread %q, want none", got)
	}
	shot(t, page, "1-list-1280x800")

	reload := func() {
		page.do(t, chromedp.Reload())
		page.waitJS(t, "connected", `!document.querySelector('#chat-view').hidden && document.querySelector('#conn-state').dataset.state === 'connected'`)
	}
	reload()
	page.waitJS(t, "first page after reload", listed(101))
	page.do(t, chromedp.Click(chromedp.ID("conv-more")))
	page.waitJS(t, "every conversation after reload", listed(len(want)))
	page.waitJS(t, "no more button", `document.querySelector('#conv-more') === null`)
	if d := eval[[]string](t, page, convKeysJS); !slices.Equal(d, want) {
		t.Fatalf("conversations after reload:\n got %v\nwant %v", d, want)
	}
	// Each direct conversation is titled "Name @handle".
	page.waitJS(t, "titles with handles", `(() => { const t = [...document.querySelectorAll('#conv-list .conv[data-key^="user:"] .title')].map(e => e.textContent);
	  return t.length === `+fmt.Sprint(len(want)-1)+` && t[0] === 'Bob@bob' && t[1] === 'Carol@carol' && t.at(-1) === 'Fan 000@fan000' })()`)
	page.checkClean(t, axe, "the whole list")

	// Bob is offline: his conversation is there only because the server
	// listed it. It opens at its newest message, and pages back to the
	// first.
	if eval[bool](t, page, `document.querySelector('#online-list li .dm') !== null`) {
		t.Fatal("someone is online to message: the test means them offline")
	}
	page.openListed(t, "user:"+bobID)
	page.checkOpenAtNewest(t, "bob's conversation", fmt.Sprintf("bob talk %03d", bobTalk-1))
	page.waitJS(t, "bob's unread cleared", badgeJS("user:"+bobID)+` === ''`)
	for range bobTalk/historyPageSize + 2 {
		if eval[bool](t, page, `document.querySelector('#messages .start') !== null`) {
			break
		}
		n := eval[int](t, page, `document.querySelectorAll('#messages .msg').length`)
		eval[bool](t, page, `(() => { document.querySelector('#messages').scrollTop = 0; return true })()`)
		page.waitJS(t, "an older page", fmt.Sprintf(`document.querySelectorAll('#messages .msg').length > %d || document.querySelector('#messages .start') !== null`, n))
	}
	if n := eval[int](t, page, `document.querySelectorAll('#messages .msg').length`); n != bobTalk {
		t.Errorf("bob's conversation shows %d messages, want %d", n, bobTalk)
	}
	shot(t, page, "2-bob-start-1280x800")

	// The list on phones, and reading on one: carol's conversation is read
	// there.
	for _, vp := range [][2]int64{{390, 844}, {320, 568}} {
		size := fmt.Sprintf("%dx%d", vp[0], vp[1])
		page.viewport(t, vp[0], vp[1])
		reload()
		page.checkOpenAtNewest(t, "lobby at "+size, "lobby 4")
		page.openListed(t, "user:"+carolID)
		page.checkOpenAtNewest(t, "carol's at "+size, "to carol 29")
		page.do(t, chromedp.Click(chromedp.ID("toggle-side")))
		page.waitJS(t, "drawer open", `getComputedStyle(document.querySelector('#side')).display !== 'none'`)
		page.checkHandles(t, "3-drawer-"+size)
		page.checkClean(t, axe, "drawer at "+size)
		page.do(t, chromedp.KeyEvent("\x1b"))
	}
}

// historyPageSize is the page's history page (app.js historyPage).
const historyPageSize = 50

// TestBrowserReadAcrossDevices: bob sees alice typing to him. He writes
// her five messages while she is offline. She logs in on her desktop
// (gateway 1): his conversation says 5 unread, and still does after a
// reload. She reads it on her phone (gateway 2): the desktop's badge
// clears without a reload, and bob's page says his last message was
// seen, also once he reloads it.
func TestBrowserReadAcrossDevices(t *testing.T) {
	const pw = "two-screens-2026"
	s := startBrowserStack(t)
	axe := axeSource(t)
	aliceID := registerOnly(t, s.gateways[0], "alice", "Alice", pw)
	bobID := registerOnly(t, s.gateways[0], "bob", "Bob", pw)
	aliceKey := "user:" + bobID // the conversation, as alice's pages key it

	desktop := newBrowser(t, "read-desktop", s.gateways[0])
	bob := newBrowser(t, "read-bob", s.gateways[1])
	desktop.login(t, "alice", pw)
	desktop.viewport(t, 1280, 800)
	desktop.noteKeys(t)
	bob.login(t, "bob", pw)
	bob.viewport(t, 1280, 800)
	bob.openDM(t, "Alice")
	bob.say(t, "are you there?")
	desktop.openListed(t, aliceKey)
	desktop.waitJS(t, "bob's question", messagesContain("are you there?"))
	desktop.say(t, "yes, for a minute")
	// Alice read his question: bob sees it seen.
	bob.waitJS(t, "question seen", seenOn("are you there?"))
	// She starts an answer: bob sees her typing.
	desktop.typeAfterInterval(t, "brb")
	bob.waitJS(t, "alice typing", typingJS+` === 'Alice is typing…'`)
	desktop.do(t, chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("login-form")))

	for i := 1; i <= 5; i++ {
		bob.say(t, fmt.Sprintf("while you were away %d", i))
	}
	bob.waitJS(t, "five sent", countMessages("while you were away 5")+` === 1`)
	if !eval[bool](t, bob, seenOn("are you there?")) {
		t.Error("bob's seen mark left his read message before alice read more")
	}
	shot(t, bob, "1-bob-unseen")

	// Alice's desktop: the lobby opens; bob's conversation says 5.
	desktop.login(t, "alice", pw)
	desktop.waitJS(t, "5 unread on the desktop", badgeJS(aliceKey)+` === '5'`)
	desktop.waitJS(t, "tab title", `document.title === '(5) natter'`)
	// A reload keeps the conversation and its count: both are the server's.
	desktop.do(t, chromedp.Reload())
	desktop.waitJS(t, "connected after reload", `document.querySelector('#conn-state').dataset.state === 'connected'`)
	desktop.waitJS(t, "5 unread after reload", badgeJS(aliceKey)+` === '5' && document.title === '(5) natter'`)
	shot(t, desktop, "2-desktop-unread-1280x800")
	desktop.checkClean(t, axe, "desktop with unread")

	// Her phone on the other gateway says 5 too, then she reads there.
	phone := newBrowser(t, "read-phone", s.gateways[1])
	phone.login(t, "alice", pw)
	phone.viewport(t, 390, 844)
	phone.waitJS(t, "5 unread on the phone's header", `(() => { const b = document.querySelector('#menu-unread'); return !b.hidden && b.textContent === '5' })()`)
	phone.do(t, chromedp.Click(chromedp.ID("toggle-side")))
	phone.waitJS(t, "5 unread in the phone's list", badgeJS(aliceKey)+` === '5'`)
	shot(t, phone, "3-phone-drawer-390x844")
	phone.checkClean(t, axe, "phone drawer")
	phone.do(t, chromedp.Click(chromedp.CSS(`#conv-list .conv[data-key="`+aliceKey+`"]`)))
	phone.checkOpenAtNewest(t, "bob's conversation", "while you were away 5")
	phone.waitJS(t, "phone's badges clear", badgeJS(aliceKey)+` === '' && document.querySelector('#menu-unread').hidden`)
	desktop.waitJS(t, "desktop's badge clears", badgeJS(aliceKey)+` === '' && document.title === 'natter'`)
	bob.waitJS(t, "bob's last message seen", seenOn("while you were away 5"))
	if n := eval[int](t, bob, `document.querySelectorAll('#messages .seen').length`); n != 1 {
		t.Errorf("bob's page shows %d seen marks, want one, on the last message seen", n)
	}
	shot(t, phone, "4-phone-read-390x844")
	shot(t, desktop, "5-desktop-cleared-1280x800")
	// The mark is still there after bob reloads: the list says how far
	// alice read.
	bob.do(t, chromedp.Reload())
	bob.waitJS(t, "connected after reload", `document.querySelector('#conn-state').dataset.state === 'connected'`)
	bob.openListed(t, "user:"+aliceID)
	bob.checkOpenAtNewest(t, "after reload", "while you were away 5")
	bob.waitJS(t, "seen after reload", seenOn("while you were away 5"))
	shot(t, bob, "6-bob-seen-1280x800")
	bob.checkClean(t, axe, "bob with seen")

	// In Chinese the mark is translated; at 320 px it fits.
	bob.viewport(t, 320, 568)
	eval[bool](t, bob, `(() => { const s = document.querySelector('#lang'); s.value = 'zh'; s.dispatchEvent(new Event('change')); return true })()`)
	bob.waitJS(t, "seen in Chinese", `document.querySelector('#messages .seen')?.textContent === '已读'`)
	bob.checkHandles(t, "7-bob-seen-zh-320x568")

	// With the phone's drawer over the conversation, a new message is
	// unread on both; reading it on the desktop clears the phone.
	phone.do(t, chromedp.Click(chromedp.ID("toggle-side")))
	phone.waitJS(t, "drawer open", `getComputedStyle(document.querySelector('#side')).display !== 'none'`)
	bob.say(t, "one more")
	desktop.waitJS(t, "desktop unread 1", badgeJS(aliceKey)+` === '1'`)
	phone.waitJS(t, "phone unread 1", badgeJS(aliceKey)+` === '1'`)
	desktop.openListed(t, aliceKey)
	desktop.checkOpenAtNewest(t, "read on the desktop", "one more")
	phone.waitJS(t, "phone told it was read", badgeJS(aliceKey)+` === '' && document.querySelector('#menu-unread').hidden`)
	for _, b := range []*browser{desktop, phone, bob} {
		if e := b.takeErrors(); len(e) > 0 {
			t.Errorf("%s: console errors: %v", b.name, e)
		}
	}
}

// seenOn says whether the one "seen" mark is on your message with text.
func seenOn(text string) string {
	return `(() => { const m = document.querySelector('#messages .seen')?.closest('.msg'); return !!m && m.querySelector('.text').textContent === ` + js(text) + ` })()`
}

// TestBrowserQuotaRefusal: with 5 sends a minute per user, the sixth is
// refused (a later one, up to the eleventh, across a minute's end) with quota_exceeded and the page says why and when sending
// resumes, in English and in Chinese.
func TestBrowserQuotaRefusal(t *testing.T) {
	s := startBrowserStack(t, "USER_SENDS_PER_MINUTE=5")
	axe := axeSource(t)
	b := newBrowser(t, "quota", s.gateways[0])
	b.registerAndLogin(t, "quinn", "Quinn", "slow-down-2026")
	b.viewport(t, 390, 844)
	// The quota counts whole minutes: when the sends straddle a minute's
	// end, the next minute allows five more, so the refusal comes at the
	// sixth, or up to the eleventh then.
	refused := ""
	for i := 1; i <= 11 && refused == ""; i++ {
		text := fmt.Sprintf("message %d", i)
		b.say(t, text)
		b.waitJS(t, "stored or refused", countMessages(text)+` === 1 || document.querySelector('#messages .msg.failed .reason') !== null`)
		if eval[bool](t, b, `document.querySelector('#messages .msg.failed .reason') !== null`) {
			refused = text
			if i < 6 {
				t.Fatalf("%s refused, want five sends a minute to pass", text)
			}
		}
	}
	if refused == "" {
		t.Fatal("eleven sends in a row, none refused, with 5 a minute")
	}
	reason := eval[string](t, b, `document.querySelector('#messages .msg.failed .reason').textContent`)
	if !regexp.MustCompile(`^You have sent as much as one person may for now\. You can send again at \d\d:\d\d:\d\d( [AP]M)?\.$`).MatchString(reason) {
		t.Errorf("reason shown: %q", reason)
	}
	if got := eval[string](t, b, `document.querySelector('#messages .msg.failed .text').textContent + ' | ' + document.querySelector('#messages .msg.failed .mark').textContent`); got != refused+" | not sent" {
		t.Errorf("failed message shows %q", got)
	}
	b.waitJS(t, "announced", `document.querySelector('#announcer').textContent.startsWith('not sent: You have sent as much')`)
	// When sending resumes comes from the frame's retry_after; only a
	// frame without it has its English message read.
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	waits, err := chromedp.Run(ctx, chromedp.Evaluate[[]any](`import('/conn.js').then(m => [
	  m.retryAfterOf({code: 'quota_exceeded', retry_after: 42, message: 'sending resumes in 7 s'}),
	  m.retryAfterOf({code: 'quota_exceeded', message: 'sending resumes in 7 s'}),
	  m.retryAfterOf({code: 'quota_exceeded', message: 'try later'})])`, chromedp.EvalAwaitPromise))
	if err != nil || fmt.Sprint(waits) != "[42 7 <nil>]" {
		t.Errorf("retryAfterOf: %v, %v; want [42 7 <nil>]", waits, err)
	}
	shot(t, b, "1-refused-390x844")
	b.checkClean(t, axe, "refused send")
	eval[bool](t, b, `(() => { const s = document.querySelector('#lang'); s.value = 'zh'; s.dispatchEvent(new Event('change')); return true })()`)
	b.waitJS(t, "reason in Chinese", `/^你暂时已达到发送上限，.*后可以再次发送。$/.test(document.querySelector('#messages .msg.failed .reason').textContent)`)
	b.viewport(t, 320, 568)
	shot(t, b, "2-refused-zh-320x568")
	b.viewport(t, 1280, 800)
	shot(t, b, "3-refused-zh-1280x800")
	b.checkClean(t, axe, "refused send in Chinese")
}

// TestConversationsUnreadCountsOthers: a user's own messages are never
// unread to them, even sent from a socket that never sends read (a bot, a
// page closed at once): sending is reading, as chat apps have it, so what
// they answered is read too. Alice wrote twice, bob answered: one unread
// for alice, none for bob. (The page shows it so for a conversation
// whose last message is the user's; the server counts every message
// after the cursor.)
func TestConversationsUnreadCountsOthers(t *testing.T) {
	s := startBrowserStack(t)
	gw := s.gateways[0]
	aliceID, aliceCookie := registerLogin(t, gw, "alice", "Alice", "own-words-2026")
	bobID, bobCookie := registerLogin(t, gw, "bob", "Bob", "own-words-2026")
	alice, _ := dialChat(t, gw, aliceCookie, 0)
	bob, _ := dialChat(t, gw, bobCookie, 0)
	alice.say(t, "a1", toUser(bobID), "hello bob")
	alice.say(t, "a2", toUser(bobID), "are you there?")
	bob.say(t, "b1", toUser(aliceID), "here")
	// The sender's cursor moves in the background once a send is stored:
	// asked again until it has.
	for _, u := range []struct {
		name, cookie, other string
		want                float64
	}{{"alice", aliceCookie, bobID, 1}, {"bob", bobCookie, aliceID, 0}} {
		poll.Until(t, 10*time.Second, func() error {
			c, _ := dialChat(t, gw, u.cookie, 0)
			defer c.close()
			var got any = "no item"
			c.waitFor(t, u.name+"'s conversations", func(o map[string]any) bool {
				if o["type"] != "conversations" {
					return false
				}
				for _, it := range o["items"].([]any) {
					it := it.(map[string]any)
					if to := it["to"].(map[string]any); to["user"] == u.other {
						got = it["unread"]
					}
				}
				return true
			})
			if got != u.want {
				return fmt.Errorf("%s's conversation: unread %v, want %v (the other person's messages after the user's last)", u.name, got, u.want)
			}
			return nil
		})
	}
}
