package e2e_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// Rooms on the page, as people use them: one person makes a room, another
// finds it under "Browse rooms" and joins, they talk and see each other
// typing, and one leaves; a private room is reached only by invitation.
// Every step on a desktop and on phones, by keyboard-usable controls, and
// clean for axe-core.

// isPhone says whether the page shows the phone layout (the drawer).
func (b *browser) isPhone(t *testing.T) bool {
	t.Helper()
	return eval[bool](t, b, `getComputedStyle(document.querySelector('#toggle-side')).display !== 'none'`)
}

// openDrawer shows the conversation list (a phone's drawer).
func (b *browser) openDrawer(t *testing.T) {
	t.Helper()
	if b.isPhone(t) && !eval[bool](t, b, `document.querySelector('#side').classList.contains('open')`) {
		b.do(t, chromedp.Click(chromedp.ID("toggle-side")))
		b.waitJS(t, "drawer open", `getComputedStyle(document.querySelector('#side')).display !== 'none'`)
	}
}

// currentKeyJS is the open conversation's key.
const currentKeyJS = `((document.querySelector('#conv-list .conv[aria-current="true"]') || {dataset: {}}).dataset.key || '')`

// createRoom makes a room through "New room" and returns its id, once the
// page has opened it.
func (b *browser) createRoom(t *testing.T, name, visibility string) string {
	t.Helper()
	b.openDrawer(t)
	b.do(t, chromedp.Click(chromedp.ID("new-room")))
	b.waitJS(t, "new room dialog", `document.querySelector('#new-room-dialog').open && document.activeElement.id === 'new-room-name'`)
	b.do(t, chromedp.SendKeys(chromedp.ID("new-room-name"), name))
	if visibility == "private" {
		b.do(t, chromedp.Click(chromedp.CSS(`#new-room-form input[value="private"]`)))
	}
	b.do(t, chromedp.Click(chromedp.ID("new-room-submit")))
	b.waitJS(t, "room "+name+" open", `!document.querySelector('#new-room-dialog').open && document.querySelector('#conv-title').textContent === `+js(name))
	key := eval[string](t, b, currentKeyJS)
	if !strings.HasPrefix(key, "room:") || key == "room:lobby" {
		t.Fatalf("%s: created room open as %q", b.name, key)
	}
	return strings.TrimPrefix(key, "room:")
}

// browseFor opens "Browse rooms" and searches for query.
func (b *browser) browseFor(t *testing.T, query string) {
	t.Helper()
	b.openDrawer(t)
	b.do(t, chromedp.Click(chromedp.ID("browse-rooms")))
	b.waitJS(t, "browse dialog", `document.querySelector('#browse-dialog').open && document.activeElement.id === 'browse-query'`)
	b.do(t, chromedp.SendKeys(chromedp.ID("browse-query"), query))
}

// browsedJS is the browse list's entry of room: "name | meta | invited |
// button", empty while it is not listed.
func browsedJS(room string) string {
	return `(() => { const li = document.querySelector('#browse-list li[data-room="` + room + `"]'); if (!li) return '';
	  return [li.querySelector('.room-name').textContent, li.querySelector('.room-meta').textContent,
	    li.querySelector('.badge')?.textContent || '', li.querySelector('button').textContent].join(' | ') })()`
}

// headJS is the open conversation's header: "title | sub | members button".
const headJS = `[document.querySelector('#conv-title').textContent, document.querySelector('#conv-sub').textContent,
  document.querySelector('#room-info').hidden ? '' : document.querySelector('#room-info').textContent.replace(/\s+/g, ' ').trim()].join(' | ')`

// typingJS is the typing line under the messages.
const typingJS = `document.querySelector('#typing').textContent`

// membersJS lists the members panel: "Name @handle [online|offline] [owner]".
const membersJS = `[...document.querySelectorAll('#members-list li')].map(li =>
  li.querySelector('.who').textContent + ' ' + (li.querySelector('.dot.on') ? 'online' : 'offline') + (li.querySelector('.badge') ? ' owner' : '')).join(', ')`

// noteKeys has the page note when the composer last got a keystroke, for
// typeAfterInterval.
func (b *browser) noteKeys(t *testing.T) {
	t.Helper()
	eval[bool](t, b, `(() => { document.querySelector('#msg').addEventListener('input', () => { window.lastKeys = performance.now() }); return true })()`)
}

// typeAfterInterval types text into the composer, without sending, once
// the typing interval (chat.TypingInterval, 3 s) has passed since the
// last keystroke: typing said within it is dropped, by the page and by
// the gateway.
func (b *browser) typeAfterInterval(t *testing.T, text string) {
	t.Helper()
	b.waitJS(t, "the typing interval since the last keystroke", `performance.now() - (window.lastKeys || 0) > 3100`)
	b.do(t, chromedp.SendKeys(chromedp.ID("msg"), text))
}

// checkFits fails if anything is wider than the screen or the composer is
// off it.
func (b *browser) checkFits(t *testing.T, when string) {
	t.Helper()
	l := b.layout(t)
	vw := eval[int](t, b, `document.documentElement.clientWidth`)
	if !l.ComposerInView || l.PageScrolls || l.Width > vw {
		shot(t, b, "failed-fit-"+strings.ReplaceAll(when, " ", "-"))
		t.Errorf("%s, %s: composer in view %v, page scrolls %v, page %d px wide on a %d px screen", b.name, when, l.ComposerInView, l.PageScrolls, l.Width, vw)
	}
}

// TestBrowserRooms: alice (desktop) makes a public room; bob (phone, the
// other gateway) finds it under "Browse rooms", joins, and they talk. He
// sees her typing, and the line goes once she stops. The room stays in
// both lists over a reload, unread counts and all; then bob leaves and
// alice's count drops.
func TestBrowserRooms(t *testing.T) {
	const pw = "room-to-talk-2026"
	s := startBrowserStack(t)
	axe := axeSource(t)
	registerOnly(t, s.gateways[0], "alice", "Alice", pw)
	registerOnly(t, s.gateways[0], "bob", "Bob", pw)
	alice := newBrowser(t, "rooms-alice", s.gateways[0])
	bob := newBrowser(t, "rooms-bob", s.gateways[1])
	alice.login(t, "alice", pw)
	alice.viewport(t, 1280, 800)
	alice.noteKeys(t)
	bob.login(t, "bob", pw)
	bob.viewport(t, 390, 844)

	// A name is required; one too long is refused at the field.
	alice.do(t, chromedp.Click(chromedp.ID("new-room")))
	alice.do(t, chromedp.Click(chromedp.ID("new-room-submit")))
	alice.waitJS(t, "name required", `document.querySelector('#new-room-name-error').textContent === 'Required.' && document.activeElement.id === 'new-room-name'`)
	alice.do(t, chromedp.SendKeys(chromedp.ID("new-room-name"), strings.Repeat("x", 65)), chromedp.Click(chromedp.ID("new-room-submit")))
	alice.waitJS(t, "name too long", `document.querySelector('#new-room-name-error').textContent.startsWith('A name of 1 to 64 characters')`)
	shot(t, alice, "1-new-room-error-1280x800")
	alice.checkClean(t, axe, "new room dialog with an error")
	alice.do(t, chromedp.Click(chromedp.ID("new-room-close")))

	room := alice.createRoom(t, "Go fans", "public")
	roomKey := "room:" + room
	alice.waitJS(t, "header", headJS+` === 'Go fans | Public room · 1 member | Members 1'`)
	alice.waitJS(t, "listed under the lobby", convKeysJS+`.slice(0, 2).join(' ') === `+js("room:lobby "+roomKey))
	shot(t, alice, "2-created-1280x800")

	// Bob finds it by part of its name, any case, and joins.
	bob.browseFor(t, "GO f")
	bob.waitJS(t, "found", browsedJS(room)+` === 'Go fans | 1 member |  | Join'`)
	shot(t, bob, "3-browse-390x844")
	bob.checkClean(t, axe, "browse rooms on a phone")
	bob.do(t, chromedp.Click(chromedp.CSS(`#browse-list li[data-room="`+room+`"] button`)))
	bob.waitJS(t, "joined and open", `!document.querySelector('#browse-dialog').open && `+currentKeyJS+` === `+js(roomKey))
	bob.waitJS(t, "bob's header", headJS+` === 'Go fans | Public room · 2 members | Members 2'`)
	alice.waitJS(t, "alice's count", headJS+` === 'Go fans | Public room · 2 members | Members 2'`)

	// They talk.
	alice.say(t, "welcome, bob")
	bob.checkOpenAtNewest(t, "alice's welcome", "welcome, bob")
	bob.say(t, "thanks! what's up?")
	alice.checkOpenAtNewest(t, "bob's answer", "thanks! what's up?")

	// Alice types without sending: bob sees it, and the line goes six
	// seconds after her last keystroke.
	alice.typeAfterInterval(t, "let me think")
	bob.waitJS(t, "alice typing", typingJS+` === 'Alice is typing…'`)
	bob.checkFits(t, "typing line")
	shot(t, bob, "4-typing-390x844")
	bob.checkClean(t, axe, "typing line")
	bob.waitJS(t, "typing line gone", typingJS+` === ''`)
	alice.do(t, chromedp.SendKeys(chromedp.ID("msg"), "\r"))
	bob.checkOpenAtNewest(t, "alice's thought", "let me think")
	if got := eval[string](t, alice, typingJS); got != "" {
		t.Errorf("alice's own typing line: %q", got)
	}

	// The members panel: both, online, alice the owner.
	alice.do(t, chromedp.Click(chromedp.ID("room-info")))
	alice.waitJS(t, "members", membersJS+` === 'Alice@alice online owner, Bob@bob online' || `+membersJS+` === 'Bob@bob online, Alice@alice online owner'`)
	shot(t, alice, "5-members-1280x800")
	alice.checkClean(t, axe, "members panel")
	alice.do(t, chromedp.KeyEvent("\x1b"))
	alice.waitJS(t, "panel closed by Escape", `!document.querySelector('#room-dialog').open`)

	// Bob looks at the lobby; alice writes in the room: one unread for
	// him, kept over a reload, cleared once he reads it.
	bob.openListed(t, "room:lobby")
	alice.say(t, "are you still there?")
	bob.openDrawer(t)
	bob.waitJS(t, "unread in the room", badgeJS(roomKey)+` === '1'`)
	bob.waitJS(t, "preview", `document.querySelector('#conv-list .conv[data-key="`+roomKey+`"] .preview').textContent === 'Alice @alice: are you still there?'`)
	bob.checkClean(t, axe, "drawer with a room")
	shot(t, bob, "6-drawer-390x844")
	bob.do(t, chromedp.Reload())
	bob.waitJS(t, "connected after reload", `document.querySelector('#conn-state').dataset.state === 'connected'`)
	bob.openDrawer(t)
	bob.waitJS(t, "room listed after reload", `document.querySelector('#conv-list .conv[data-key="`+roomKey+`"] .title')?.textContent === 'Go fans' && `+badgeJS(roomKey)+` === '1'`)
	if got := eval[string](t, bob, `document.querySelector('#conv-list .conv[data-key="`+roomKey+`"] .kind').textContent`); got != "2 members" {
		t.Errorf("room's count in the list after reload: %q", got)
	}
	bob.do(t, chromedp.Click(chromedp.CSS(`#conv-list .conv[data-key="`+roomKey+`"]`)))
	bob.checkOpenAtNewest(t, "room after reload", "are you still there?")
	bob.waitJS(t, "read", badgeJS(roomKey)+` === ''`)

	// At 320 px the room's header, the typing line and the composer fit.
	bob.viewport(t, 320, 568)
	alice.typeAfterInterval(t, "one more thing")
	bob.waitJS(t, "alice typing at 320", typingJS+` === 'Alice is typing…'`)
	bob.checkFits(t, "320x568")
	shot(t, bob, "7-typing-320x568")
	bob.checkClean(t, axe, "room at 320x568")
	alice.do(t, chromedp.SendKeys(chromedp.ID("msg"), "\r"))
	bob.checkOpenAtNewest(t, "at 320", "one more thing")

	// Bob leaves: the lobby opens, the room leaves his list, and alice's
	// count drops to one.
	bob.do(t, chromedp.Click(chromedp.ID("room-info")))
	bob.waitJS(t, "panel", `document.querySelector('#room-dialog').open`)
	bob.checkHandles(t, "8-panel-320x568")
	bob.checkClean(t, axe, "room panel at 320x568")
	bob.do(t, chromedp.Click(chromedp.ID("leave-room")))
	bob.waitJS(t, "left", `!document.querySelector('#room-dialog').open && `+currentKeyJS+` === 'room:lobby' && document.querySelector('#conv-list .conv[data-key="`+roomKey+`"]') === null`)
	alice.waitJS(t, "alice's count after bob left", headJS+` === 'Go fans | Public room · 1 member | Members 1'`)
	shot(t, alice, "9-after-leave-1280x800")

	// After a reload alice still has her room, with its name and count.
	alice.do(t, chromedp.Reload())
	alice.waitJS(t, "alice's room after reload", `document.querySelector('#conv-list .conv[data-key="`+roomKey+`"] .kind')?.textContent === '1 member'`)
	alice.checkClean(t, axe, "desktop after reload")
	for _, b := range []*browser{alice, bob} {
		if e := b.takeErrors(); len(e) > 0 {
			t.Errorf("%s: console errors: %v", b.name, e)
		}
	}
}

// TestBrowserPrivateRoom: alice makes a private room. Carol cannot find
// it. Alice invites bob from the online list: bob's page shows the
// invitation, and its Join button takes him in. She invites carol by the
// id carol's account dialog shows: carol dismisses the notice, then finds
// the room under "Browse rooms", marked invited, and joins there. With
// two rooms an hour, alice's third is refused, saying when she can make
// another. When alice and bob both type, carol sees the two of them.
func TestBrowserPrivateRoom(t *testing.T) {
	const pw = "closed-doors-2026"
	s := startBrowserStack(t, "ROOM_CREATES_PER_HOUR=2")
	axe := axeSource(t)
	gw := s.gateways[0]
	registerOnly(t, gw, "alice", "Alice", pw)
	registerOnly(t, gw, "bob", "Bob", pw)
	carolID := registerOnly(t, gw, "carol", "Carol", pw)
	alice := newBrowser(t, "private-alice", gw)
	bob := newBrowser(t, "private-bob", s.gateways[1])
	carol := newBrowser(t, "private-carol", gw)
	alice.login(t, "alice", pw)
	alice.viewport(t, 1280, 800)
	bob.login(t, "bob", pw)
	bob.viewport(t, 1280, 800)
	carol.login(t, "carol", pw)
	carol.viewport(t, 320, 568)

	room := alice.createRoom(t, "Secret plans", "private")
	roomKey := "room:" + room
	alice.waitJS(t, "header", headJS+` === 'Secret plans | Private room · 1 member | Members 1'`)
	alice.waitJS(t, "list says private", `document.querySelector('#conv-list .conv[data-key="`+roomKey+`"] .kind').textContent === 'Private · 1 member'`)

	// Carol cannot find it.
	carol.browseFor(t, "secret")
	carol.waitJS(t, "nothing found", `document.querySelector('#browse-status').textContent === 'No room matches "secret".'`)
	// Escape empties the search box (as search boxes do), then closes
	// the dialog, and only it: the drawer under it stays, with focus back
	// on the button; one more Escape closes the drawer.
	carol.do(t, chromedp.KeyEvent("\x1b"))
	carol.waitJS(t, "search emptied", `document.querySelector('#browse-query').value === '' && document.querySelector('#browse-dialog').open`)
	carol.do(t, chromedp.KeyEvent("\x1b"))
	carol.waitJS(t, "dialog closed", `!document.querySelector('#browse-dialog').open && document.querySelector('#side').classList.contains('open') && document.activeElement.id === 'browse-rooms'`)
	carol.do(t, chromedp.KeyEvent("\x1b"))
	carol.waitJS(t, "drawer closed", `!document.querySelector('#side').classList.contains('open') && document.activeElement.id === 'toggle-side'`)

	// Alice invites bob, who is online.
	alice.do(t, chromedp.Click(chromedp.ID("room-info")))
	alice.waitJS(t, "bob to invite", `document.querySelector('#invite-people li .dm[aria-label="Invite Bob @bob"]') !== null`)
	alice.do(t, chromedp.Click(chromedp.CSS(`#invite-people .dm[aria-label="Invite Bob @bob"]`)))
	alice.waitJS(t, "invited", `document.querySelector('#invite-done').textContent === 'Bob @bob was invited to Secret plans.'`)
	shot(t, alice, "1-invited-1280x800")
	alice.checkClean(t, axe, "room panel after an invite")
	bob.waitJS(t, "invitation", `document.querySelector('#notices .notice-text')?.textContent === 'Alice@alice invited you to Secret plans'`)
	bob.checkFits(t, "invitation")
	shot(t, bob, "2-invitation-1280x800")
	bob.checkClean(t, axe, "invitation")
	bob.do(t, chromedp.Click(chromedp.CSS(`#notices .notice[data-room="`+room+`"] .join`)))
	bob.waitJS(t, "bob in", currentKeyJS+` === `+js(roomKey)+` && document.querySelector('#notices .notice') === null`)
	bob.waitJS(t, "bob's header", headJS+` === 'Secret plans | Private room · 2 members | Members 2'`)
	alice.waitJS(t, "members updated", membersJS+`.includes('Bob@bob online')`)

	// Carol finds her id in her account dialog and tells alice.
	carol.do(t, chromedp.Click(chromedp.ID("account")))
	carol.waitJS(t, "account dialog", `document.querySelector('#account-dialog').open`)
	if got := eval[string](t, carol, `document.querySelector('#account-id').textContent`); got != carolID {
		t.Fatalf("carol's account dialog shows id %q, want %q", got, carolID)
	}
	carol.do(t, chromedp.Click(chromedp.ID("account-close")))

	// An id nobody has is refused at the form; carol's is not.
	alice.do(t, chromedp.SendKeys(chromedp.ID("invite-user"), "nosuchuser0"), chromedp.Click(chromedp.ID("invite-submit")))
	alice.waitJS(t, "bad id refused", `document.querySelector('#invite-error').textContent !== ''`)
	eval[bool](t, alice, `(() => { document.querySelector('#invite-user').value = ''; return true })()`)
	alice.do(t, chromedp.SendKeys(chromedp.ID("invite-user"), carolID), chromedp.Click(chromedp.ID("invite-submit")))
	alice.waitJS(t, "carol invited", `document.querySelector('#invite-done').textContent === 'Carol @carol was invited to Secret plans.' && document.querySelector('#invite-error').textContent === ''`)
	alice.do(t, chromedp.Click(chromedp.ID("room-close")))

	// Carol, at 320 px, puts the notice aside and joins from the list.
	carol.waitJS(t, "carol's invitation", `document.querySelector('#notices .notice[data-room="`+room+`"]') !== null`)
	carol.checkFits(t, "invitation at 320")
	carol.checkHandles(t, "3-invitation-320x568")
	carol.checkClean(t, axe, "invitation at 320")
	carol.do(t, chromedp.Click(chromedp.CSS(`#notices .notice[data-room="`+room+`"] .dismiss`)))
	carol.waitJS(t, "dismissed", `document.querySelector('#notices .notice') === null && document.activeElement.id === 'msg'`)
	carol.browseFor(t, "plans")
	carol.waitJS(t, "invited room listed", browsedJS(room)+` === 'Secret plans | Private · 2 members | invited | Join'`)
	shot(t, carol, "4-browse-invited-320x568")
	carol.checkClean(t, axe, "browse with an invitation at 320")
	carol.do(t, chromedp.Click(chromedp.CSS(`#browse-list li[data-room="`+room+`"] button`)))
	carol.waitJS(t, "carol in", currentKeyJS+` === `+js(roomKey))
	carol.say(t, "hello, plotters")
	for _, b := range []*browser{alice, bob} {
		b.openListed(t, roomKey)
		b.checkOpenAtNewest(t, "carol's hello", "hello, plotters")
	}
	// Both answer at once: carol sees the two of them typing.
	for _, b := range []*browser{alice, bob} {
		b.noteKeys(t)
		b.typeAfterInterval(t, "hmm")
	}
	carol.waitJS(t, "two typing", typingJS+` === 'Alice and Bob are typing…' || `+typingJS+` === 'Bob and Alice are typing…'`)
	carol.checkFits(t, "two typing at 320")
	carol.checkHandles(t, "5-two-typing-320x568")

	// Rooms made per hour: the second goes (its name, markup and all, is
	// text), the third is refused.
	const markup = `Second <img src=x onerror=alert(1)>`
	alice.createRoom(t, markup, "public")
	if n := eval[int](t, alice, `document.querySelectorAll('img').length`); n != 0 {
		t.Errorf("a room's name made %d elements", n)
	}
	alice.waitJS(t, "name as text in the list", `[...document.querySelectorAll('#conv-list .title')].some(e => e.textContent === `+js(markup)+`)`)
	alice.openDrawer(t)
	alice.do(t, chromedp.Click(chromedp.ID("new-room")))
	alice.do(t, chromedp.SendKeys(chromedp.ID("new-room-name"), "Third"), chromedp.Click(chromedp.ID("new-room-submit")))
	alice.waitJS(t, "quota", `document.querySelector('#new-room-form .form-error').textContent !== ''`)
	msg := eval[string](t, alice, `document.querySelector('#new-room-form .form-error').textContent`)
	if !regexp.MustCompile(`^You have created as many rooms as one person may for now\. (You can create another at \d\d:\d\d( [AP]M)?|Try again later)\.$`).MatchString(msg) {
		t.Errorf("quota refusal reads %q", msg)
	}
	shot(t, alice, "6-quota-1280x800")
	alice.checkClean(t, axe, "quota refusal")
	for _, b := range []*browser{alice, bob, carol} {
		if e := b.takeErrors(); len(e) > 0 {
			t.Errorf("%s: console errors: %v", b.name, e)
		}
		b.mu.Lock()
		if len(b.dialogs) > 0 {
			t.Errorf("%s: dialogs opened: %v", b.name, b.dialogs)
		}
		b.mu.Unlock()
	}
}

// TestBrowserBrowsePaging: 55 public rooms. "Browse rooms" lists the
// first 50 and a button for the rest; a search narrows them. An invite
// past INVITES_PER_HOUR says when inviting comes back.
func TestBrowserBrowsePaging(t *testing.T) {
	const (
		pw    = "many-doors-2026"
		rooms = 55
	)
	// The making socket is not held to a person's pace.
	s := startBrowserStack(t, "ROOM_CREATES_PER_HOUR=100", "SEND_RATE=1000", "SEND_BURST=1000", "INVITES_PER_HOUR=1")
	axe := axeSource(t)
	gw := s.gateways[0]
	_, makerCookie := registerLogin(t, gw, "maker", "Maker", pw)
	registerOnly(t, gw, "reader", "Reader", pw)
	otherID := registerOnly(t, gw, "other", "Other", pw)
	maker, _ := dialChat(t, gw, makerCookie, 0)
	made := map[string]bool{}
	for i := range rooms {
		maker.send(t, fmt.Sprintf(`{"type":"room_create","id":"c%d","name":"Room %02d","visibility":"public"}`, i, i))
	}
	maker.waitFor(t, "every room made", func(o map[string]any) bool {
		if o["type"] == "error" {
			t.Fatalf("room_create refused: %v", o)
		}
		if o["type"] == "room" {
			made[o["id"].(string)] = true
		}
		return len(made) == rooms
	})

	b := newBrowser(t, "paging", gw)
	b.login(t, "reader", pw)
	b.viewport(t, 390, 844)
	b.browseFor(t, "room")
	b.waitJS(t, "first page", `document.querySelectorAll('#browse-list li').length === 50 && !document.querySelector('#browse-more').hidden`)
	shot(t, b, "1-first-page-390x844")
	b.checkClean(t, axe, "a page of rooms")
	b.do(t, chromedp.Click(chromedp.ID("browse-more")))
	b.waitJS(t, "all rooms", fmt.Sprintf(`document.querySelectorAll('#browse-list li').length === %d && document.querySelector('#browse-more').hidden && document.querySelector('#browse-status').textContent === '%d rooms'`, rooms, rooms))
	if n := eval[int](t, b, `new Set([...document.querySelectorAll('#browse-list li')].map(li => li.dataset.room)).size`); n != rooms {
		t.Errorf("%d different rooms listed, want %d", n, rooms)
	}
	b.do(t, chromedp.SendKeys(chromedp.ID("browse-query"), " 5"))
	b.waitJS(t, "narrowed", `[...document.querySelectorAll('#browse-list .room-name')].map(e => e.textContent).sort().join(',') === 'Room 50,Room 51,Room 52,Room 53,Room 54'`)

	// Join one; invite two people with room for one an hour (the second
	// one does not exist: the quota is checked first).
	eval[bool](t, b, `(() => { document.querySelector('#browse-list li button').click(); return true })()`)
	b.waitJS(t, "joined", `!document.querySelector('#browse-dialog').open && !document.querySelector('#room-info').hidden`)
	b.do(t, chromedp.Click(chromedp.ID("room-info")))
	b.waitJS(t, "members", `document.querySelectorAll('#members-list li').length === 2`)
	b.do(t, chromedp.SendKeys(chromedp.ID("invite-user"), otherID), chromedp.Click(chromedp.ID("invite-submit")))
	b.waitJS(t, "first invite", `document.querySelector('#invite-done').textContent.startsWith('Other @other was invited to Room 5')`)
	eval[bool](t, b, `(() => { document.querySelector('#invite-user').value = ''; return true })()`)
	b.do(t, chromedp.SendKeys(chromedp.ID("invite-user"), "nosuchuser1"), chromedp.Click(chromedp.ID("invite-submit")))
	b.waitJS(t, "invite quota", `/^You have sent as many invitations as one person may for now\. (You can invite again at .+|Try again later)\.$/.test(document.querySelector('#invite-error').textContent)`)
	shot(t, b, "2-invite-quota-390x844")
	b.checkClean(t, axe, "invite quota")
}
