package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natstest"
)

// Names are not unique, handles are: the page shows every user as
// "Name @handle", and a name cannot pass for the page's own labels.

// authorOf is the author line ("Name @handle") of the message with text
// in the open conversation; empty while it is not shown.
func authorOf(text string) string {
	return `(() => { const m = [...document.querySelectorAll('#messages .msg')].find(m => m.querySelector('.text').textContent === ` + js(text) + `);
	  return m ? m.querySelector('.who .name').textContent + ' ' + m.querySelector('.who .handle').textContent : '' })()`
}

// onlineJS lists the online list's entries as "Name @handle", with " +you"
// on the one the page marks as yours.
const onlineJS = `[...document.querySelectorAll('#online-list li')].map(li =>
  li.querySelector('.who .name').textContent + ' ' + li.querySelector('.who .handle').textContent + (li.querySelector('.you') ? ' +you' : '')).sort().join(', ')`

// cutHandlesJS lists the handles on screen that are not shown whole: cut
// by an ancestor that clips, or past the screen's edge; and the page if it
// is wider than the screen. Handles not displayed (a closed drawer) and
// the vertical direction (lists scroll) are not checked.
const cutHandlesJS = `(() => {
  const vw = document.documentElement.clientWidth, bad = [];
  if (document.documentElement.scrollWidth > vw) bad.push('page ' + document.documentElement.scrollWidth + 'px wide');
  for (const h of document.querySelectorAll('.who .handle')) {
    const r = h.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    const where = h.closest('li, .msg, .conv-head')?.className + ' ' + h.textContent;
    if (r.left < -1 || r.right > vw + 1) bad.push(where + ': past the screen edge');
    if (h.scrollWidth > h.clientWidth + 1) bad.push(where + ': overflows itself');
    for (let a = h.parentElement; a && a !== document.body; a = a.parentElement) {
      if (getComputedStyle(a).overflowX === 'visible') continue;
      const ar = a.getBoundingClientRect();
      if (r.left < ar.left - 1 || r.right > ar.right + 1) bad.push(where + ': clipped by .' + a.className);
    }
  }
  return bad;
})()`

// checkHandles fails the test if a handle on screen is cut, after saving
// a screenshot as what.
func (b *browser) checkHandles(t *testing.T, what string) {
	t.Helper()
	shot(t, b, what)
	if bad := eval[[]string](t, b, cutHandlesJS); len(bad) > 0 {
		t.Errorf("%s, %s: %v", b.name, what, bad)
	}
}

// registerLogin registers and logs in through the API: the user's id and
// token cookie.
func registerLogin(t *testing.T, gateway, account, name, password string) (string, string) {
	t.Helper()
	if r := postJSON(t, gateway+"/api/register", fmt.Sprintf(`{"account":%q,"password":%q,"name":%q}`, account, password, name), ""); r.status != http.StatusCreated {
		t.Fatalf("register %s: %d %s", account, r.status, r.body)
	}
	r := postJSON(t, gateway+"/api/login", fmt.Sprintf(`{"account":%q,"password":%q}`, account, password), "")
	var body struct{ User struct{ ID string } }
	if err := json.Unmarshal([]byte(r.body), &body); r.status != http.StatusOK || err != nil || body.User.ID == "" {
		t.Fatalf("login %s: %d %s", account, r.status, r.body)
	}
	return body.User.ID, r.cookie
}

// storeOldMessage stores a lobby message whose sender names no handle, as
// messages stored before tokens carried it do.
func storeOldMessage(t *testing.T, natsURL, fromID, fromName, id, text string) {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, natsURL))
	if err != nil {
		t.Fatal(err)
	}
	subject, _ := chat.RoomSubject(chat.Lobby)
	data, _ := json.Marshal(chat.Message{ID: id, From: chat.User{ID: fromID, Name: fromName}, To: chat.To{Room: chat.Lobby}, Text: text, TS: time.Now().UTC()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.Publish(ctx, subject, data, jetstream.WithMsgID(fromID+":"+id)); err != nil {
		t.Fatal(err)
	}
}

func TestBrowserHandles(t *testing.T) {
	s := startBrowserStack(t)
	gw := s.gateways[0]

	// A name imitating the page's "you" is refused, with the documented
	// code and rule, and the form says why.
	r := postJSON(t, gw+"/api/register", `{"account":"mallory","password":"plain-sight-77","name":"Bob (you)"}`, "")
	var refusal struct {
		Error struct{ Code, Field, Rule string }
	}
	if err := json.Unmarshal([]byte(r.body), &refusal); err != nil || r.status != http.StatusBadRequest ||
		refusal.Error.Code != "invalid_input" || refusal.Error.Field != "name" || refusal.Error.Rule != "label" {
		t.Fatalf(`register "Bob (you)": %d %s`, r.status, r.body)
	}
	alice := newBrowser(t, "id-alice", gw)
	alice.do(t,
		chromedp.Navigate(alice.origin+"/"),
		chromedp.WaitVisible(chromedp.ID("register-form")),
		chromedp.SendKeys(chromedp.ID("register-account"), "mallory"),
		chromedp.SendKeys(chromedp.ID("register-name"), "Bob (you)"),
		chromedp.SendKeys(chromedp.ID("register-password"), "plain-sight-77"),
		chromedp.Click(chromedp.ID("register-submit")),
	)
	alice.waitJS(t, "name refused", `document.querySelector('#register-form .field-error[data-for="name"]').textContent === 'No labels the page uses, such as "(you)".' &&
	  document.querySelector('#register-name').getAttribute('aria-invalid') === 'true'`)
	shot(t, alice, "0-name-refused")
	alice.takeErrors() // the refused request's 400, which Chromium logs

	// A message stored before tokens named the handle: the page asks
	// auth for dora's.
	doraID, _ := registerLogin(t, gw, "dora", "Dora", "old-lantern-31")
	storeOldMessage(t, s.nats, doraID, "Dora", "old1", "from before handles")
	// Bart's name and handle are as long as they may be.
	_, bartCookie := registerLogin(t, gw, "bartholomew-maximilian-worthing", "Bartholomew Maximilian Worthing", "long-winded-88")

	alice.registerAndLogin(t, "alice", "Alice", "blue-harbour-42")
	impostor := newBrowser(t, "id-not-alice", s.gateways[1])
	impostor.registerAndLogin(t, "not-alice", "Alice", "amber-river-19")
	bart, _ := dialChat(t, gw, bartCookie, 0)

	alice.say(t, "hello from the real alice")
	impostor.say(t, "hello from not-alice")
	bart.send(t, `{"type":"send","id":"b1","to":{"room":"lobby"},"text":"a long name says hi"}`)
	for _, b := range []*browser{alice, impostor} {
		b.waitJS(t, "real alice's handle", authorOf("hello from the real alice")+` === 'Alice @alice'`)
		b.waitJS(t, "not-alice's handle", authorOf("hello from not-alice")+` === 'Alice @not-alice'`)
		b.waitJS(t, "bart's handle", authorOf("a long name says hi")+` === 'Bartholomew Maximilian Worthing @bartholomew-maximilian-worthing'`)
		b.waitJS(t, "dora's handle, asked of auth", authorOf("from before handles")+` === 'Dora @dora'`)
	}
	// The online list: two Alices, told apart by handle; "you" is the
	// page's badge, outside the name, on your own entry only.
	alice.waitJS(t, "online at alice", onlineJS+` === 'Alice @alice +you, Alice @not-alice, Bartholomew Maximilian Worthing @bartholomew-maximilian-worthing'`)
	impostor.waitJS(t, "online at not-alice", onlineJS+` === 'Alice @alice, Alice @not-alice +you, Bartholomew Maximilian Worthing @bartholomew-maximilian-worthing'`)

	// A private conversation is titled with the handle, in the header and
	// in the list, at both ends.
	eval[bool](t, alice, `(() => { [...document.querySelectorAll('#online-list li')].find(li => li.querySelector('.handle').textContent === '@not-alice').querySelector('.dm').click(); return true })()`)
	alice.waitJS(t, "dm title", `document.querySelector('#conv-title .name').textContent === 'Alice' && document.querySelector('#conv-title .handle').textContent === '@not-alice'`)
	alice.say(t, "which alice are you?")
	impostor.waitJS(t, "dm listed with the real alice's handle", `[...document.querySelectorAll('#conv-list .conv')].some(b => b.querySelector('.handle')?.textContent === '@alice')`)
	alice.waitJS(t, "dm listed with not-alice's handle", `[...document.querySelectorAll('#conv-list .conv')].some(b => b.querySelector('.handle')?.textContent === '@not-alice')`)
	if v := alice.axeViolations(t, axeSource(t)); len(v) > 0 {
		t.Errorf("axe: %v", v)
	}

	// On a laptop and two phones every handle shows whole: where space is
	// short the name is cut, never the handle.
	for _, vp := range []struct {
		w, h  int64
		phone bool
	}{{1280, 800, false}, {390, 844, true}, {320, 568, true}} {
		size := fmt.Sprintf("%dx%d", vp.w, vp.h)
		opts := []chromedp.EmulateViewportOption{}
		if vp.phone {
			opts = append(opts, chromedp.EmulateMobile)
		}
		alice.do(t, chromedp.EmulateViewport(vp.w, vp.h, opts...))
		alice.waitJS(t, "viewport "+size, `document.documentElement.clientWidth === `+fmt.Sprint(vp.w))
		alice.checkHandles(t, "1-dm-"+size)
		if vp.phone {
			alice.do(t, chromedp.Click(chromedp.ID("toggle-side")))
			alice.waitJS(t, "drawer open", `getComputedStyle(document.querySelector('#side')).display !== 'none'`)
			alice.checkHandles(t, "2-drawer-"+size)
		}
		eval[bool](t, alice, `(() => { document.querySelector('#conv-list button[data-key="room:lobby"]').click(); return true })()`)
		alice.waitJS(t, "lobby open", authorOf("hello from not-alice")+` !== ''`)
		alice.checkHandles(t, "3-lobby-"+size)
		eval[bool](t, alice, `(() => { document.querySelector('#conv-list button[data-key^="user:"]').click(); return true })()`)
		alice.waitJS(t, "dm open again", `document.querySelector('#conv-title .handle')?.textContent === '@not-alice'`)
	}
	// At 320 px the long name is cut and its handle is not.
	if cut := eval[bool](t, alice, `(() => { document.querySelector('#conv-list button[data-key="room:lobby"]').click();
	  const m = [...document.querySelectorAll('#messages .msg')].find(m => m.querySelector('.text').textContent === 'a long name says hi');
	  const n = m.querySelector('.who .name'), h = m.querySelector('.who .handle');
	  return n.scrollWidth > n.clientWidth && n.clientWidth > 0 && h.scrollWidth <= h.clientWidth })()`); !cut {
		shot(t, alice, "failed-long-name-320")
		t.Error("at 320px the long name is not cut before its handle")
	}
	if errs := alice.takeErrors(); len(errs) > 0 {
		t.Errorf("console errors: %v", errs)
	}
}
