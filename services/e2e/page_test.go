package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The page as people live in it: conversations longer than a screen, a
// laptop and a phone, reloads, messages arriving while scrolled up.
// Numbers: 300 lobby messages and 60 private ones, six history pages.
const (
	lobbyMessages = 300
	dmMessages    = 60
)

// openDM presses the "message" button next to name in the online list.
func (b *browser) openDM(t *testing.T, name string) {
	t.Helper()
	b.waitJS(t, name+" online", `[...document.querySelectorAll('#online-list li')].some(li => li.querySelector('.name').textContent === `+js(name)+` && li.querySelector('.dm'))`)
	eval[bool](t, b, `(() => { [...document.querySelectorAll('#online-list li')].find(li => li.querySelector('.name').textContent === `+js(name)+`).querySelector('.dm').click(); return true })()`)
	b.waitJS(t, "conversation with "+name, `document.querySelector('#conv-title .name')?.textContent === `+js(name))
}

// layout is what a person sees of the chat at one moment.
type layout struct {
	ComposerInView bool    `json:"composerInView"`
	NewestText     string  `json:"newestText"`
	NewestInView   bool    `json:"newestInView"`
	PageScrolls    bool    `json:"pageScrolls"`
	Messages       int     `json:"messages"`
	JumpShown      bool    `json:"jumpShown"`
	JumpText       string  `json:"jumpText"`
	HeaderHeight   float64 `json:"headerHeight"`
	Width          int     `json:"width"`
}

const layoutJS = `(() => {
  const r = (e) => e.getBoundingClientRect();
  const vh = innerHeight, vw = innerWidth;
  const inView = (b) => b.top >= -1 && b.bottom <= vh + 1 && b.left >= -1 && b.right <= vw + 1;
  const box = r(document.querySelector('#messages'));
  const msgs = [...document.querySelectorAll('#messages .msg')];
  const last = msgs[msgs.length - 1];
  const lb = last ? r(last) : null;
  const jump = document.querySelector('#jump');
  return {
    composerInView: inView(r(document.querySelector('#composer'))),
    newestText: last ? last.querySelector('.text').textContent : '',
    newestInView: !!lb && lb.bottom <= box.bottom + 1 && lb.bottom > box.top && inView(lb),
    pageScrolls: document.scrollingElement.scrollHeight > vh + 1 || document.scrollingElement.scrollTop > 0,
    messages: msgs.length,
    jumpShown: !jump.hidden && inView(r(jump)),
    jumpText: jump.textContent,
    headerHeight: r(document.querySelector('.top')).height,
    width: document.documentElement.scrollWidth,
  };
})()`

func (b *browser) layout(t *testing.T) layout {
	t.Helper()
	return eval[layout](t, b, layoutJS)
}

// checkOpenAtNewest: the composer on screen, the page itself not
// scrolling, and newest (the conversation's last message) in view.
func (b *browser) checkOpenAtNewest(t *testing.T, when, newest string) {
	t.Helper()
	b.waitJS(t, "newest shown "+when, `(() => { const l = `+layoutJS+`; return l.newestText.startsWith(`+js(newest)+`) && l.newestInView })()`)
	l := b.layout(t)
	if !l.ComposerInView || l.PageScrolls {
		shot(t, b, "failed-layout-"+strings.ReplaceAll(when, " ", "-"))
		t.Fatalf("%s %s: composer in view %v, page scrolls %v", b.name, when, l.ComposerInView, l.PageScrolls)
	}
}

// anchorJS reports where the first message in view is: its seq and its
// distance from the top of the list.
const anchorJS = `(() => {
  const box = document.querySelector('#messages'), top = box.getBoundingClientRect().top;
  for (const e of box.querySelectorAll('.msg[data-seq]')) {
    const r = e.getBoundingClientRect();
    if (r.bottom > top) return { seq: e.dataset.seq, offset: r.top - top };
  }
  return { seq: '', offset: 0 };
})()`

type anchor struct {
	Seq    string  `json:"seq"`
	Offset float64 `json:"offset"`
}

// offsetOf is where the message seq is now, from the top of the list.
func (b *browser) offsetOf(t *testing.T, seq string) float64 {
	t.Helper()
	return eval[float64](t, b, `(() => { const box = document.querySelector('#messages'); return document.querySelector('#messages .msg[data-seq="`+seq+`"]').getBoundingClientRect().top - box.getBoundingClientRect().top })()`)
}

// axeViolations runs axe-core (the pinned npm package) in the page and
// returns its serious and critical findings.
func (b *browser) axeViolations(t *testing.T, axeSource string) []string {
	t.Helper()
	eval[bool](t, b, `(() => { if (!window.axe) { (0, eval)(`+jsonString(axeSource)+`) } return true })()`)
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	out, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`axe.run(document, { resultTypes: ['violations'] }).then(r =>
	  r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
	   .map(v => v.id + ' (' + v.impact + '): ' + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', ')))`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("%s: axe: %v", b.name, err)
	}
	return out
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// axeSource reads axe-core from services/e2e/node_modules (npm ci).
func axeSource(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("node_modules", "axe-core", "axe.min.js"))
	if err != nil {
		t.Fatalf("axe-core: %v (run `npm ci` in services/e2e; make test does)", err)
	}
	return string(src)
}

// seedConversations stores lobbyMessages from bob in the lobby and
// dmMessages from bob to alice, some of them long, as a chat has.
func seedConversations(t *testing.T, gateway, bobCookie, aliceID string) {
	t.Helper()
	bob, _ := dialChat(t, gateway, bobCookie, 0)
	defer bob.close()
	text := func(what string, i int) string {
		s := fmt.Sprintf("%s %03d", what, i)
		if i%7 == 3 {
			s += "\n" + strings.Repeat("a longer thought that wraps over several lines, ", 6)
		}
		return s
	}
	send := func(id, to, text string) {
		f, _ := json.Marshal(map[string]any{"type": "send", "id": id, "to": json.RawMessage(to), "text": text})
		bob.send(t, string(f))
	}
	for i := range lobbyMessages {
		send(fmt.Sprintf("l%d", i), `{"room":"lobby"}`, text("lobby", i))
	}
	for i := range dmMessages {
		send(fmt.Sprintf("d%d", i), fmt.Sprintf(`{"user":%q}`, aliceID), text("private", i))
	}
	acked := map[string]bool{}
	bob.waitFor(t, "every seeded message acked", func(o map[string]any) bool {
		if o["type"] == "error" {
			t.Fatalf("seeding: %v", o)
		}
		if o["type"] == "ack" {
			acked[o["id"].(string)] = true
		}
		return len(acked) == lobbyMessages+dmMessages
	})
}

func TestBrowserLongConversations(t *testing.T) {
	// Sends from the seeding socket are not held to a person's typing rate.
	s := startBrowserStack(t, "SEND_RATE=1000", "SEND_BURST=1000", "USER_SENDS_PER_MINUTE=100000")
	axe := axeSource(t)
	gw := s.gateways[0]
	cookies := map[string]string{}
	ids := map[string]string{}
	for _, u := range []struct{ account, name string }{{"alice", "Alice"}, {"bob", "Bob"}} {
		if r := postJSON(t, gw+"/api/register", fmt.Sprintf(`{"account":%q,"password":"long-talk-2026","name":%q}`, u.account, u.name), ""); r.status != http.StatusCreated {
			t.Fatalf("register %s: %d %s", u.account, r.status, r.body)
		}
		r := postJSON(t, gw+"/api/login", fmt.Sprintf(`{"account":%q,"password":"long-talk-2026"}`, u.account), "")
		if r.status != http.StatusOK {
			t.Fatalf("login %s: %d %s", u.account, r.status, r.body)
		}
		cookies[u.account] = r.cookie
		var body struct{ User struct{ ID string } }
		_ = json.Unmarshal([]byte(r.body), &body)
		ids[u.account] = body.User.ID
	}
	seedConversations(t, gw, cookies["bob"], ids["alice"])
	newestLobby := fmt.Sprintf("lobby %03d", lobbyMessages-1)
	// Bob stays online through a socket (his messages below come from it).
	bob, _ := dialChat(t, gw, cookies["bob"], 0)
	defer bob.close()
	bobSays := func(id, to, text string) {
		f, _ := json.Marshal(map[string]any{"type": "send", "id": id, "to": json.RawMessage(to), "text": text})
		bob.send(t, string(f))
	}

	// Logged out, nothing in red, and the login page passes axe.
	alice := newBrowser(t, "alice-long", gw)
	alice.do(t, chromedp.EmulateViewport(1280, 800), chromedp.Navigate(gw+"/"), chromedp.WaitVisible(chromedp.ID("login-form")))
	if v := alice.axeViolations(t, axe); len(v) > 0 {
		t.Errorf("login page: axe: %v", v)
	}
	shot(t, alice, "long-0-login")
	if e := alice.takeErrors(); len(e) > 0 {
		t.Errorf("logged-out page load: console errors %v", e)
	}
	// A weak password is refused naming the rule it broke.
	alice.do(t,
		chromedp.SendKeys(chromedp.ID("register-account"), "carol"),
		chromedp.SendKeys(chromedp.ID("register-name"), "Carol"),
		chromedp.SendKeys(chromedp.ID("register-password"), "password123"),
		chromedp.Click(chromedp.ID("register-submit")),
	)
	alice.waitJS(t, "password rule named", `document.querySelector('#register-form .field-error[data-for="password"]').textContent === 'This password is too common. Choose another.'`)
	alice.do(t,
		chromedp.SendKeys(chromedp.ID("login-account"), "alice"),
		chromedp.SendKeys(chromedp.ID("login-password"), "long-talk-2026"),
		chromedp.Click(chromedp.ID("login-submit")),
		chromedp.WaitVisible(chromedp.ID("chat-view")),
	)

	t.Run("desktop", func(t *testing.T) {
		alice.checkOpenAtNewest(t, "after login", newestLobby)
		shot(t, alice, "long-1-desktop-open")

		// Scrolling to the top loads the page before, and the message at
		// the top stays where it was (±1 line).
		before := alice.layout(t).Messages
		oldest := eval[string](t, alice, `document.querySelector('#messages .msg[data-seq]').dataset.seq`)
		pos := eval[float64](t, alice, `(() => { const box = document.querySelector('#messages'); return document.querySelector('#messages .msg[data-seq]').getBoundingClientRect().top - box.getBoundingClientRect().top + box.scrollTop })()`)
		eval[bool](t, alice, `(() => { document.querySelector('#messages').scrollTop = 0; return true })()`)
		alice.waitJS(t, "older page", fmt.Sprintf(`document.querySelectorAll('#messages .msg').length > %d`, before))
		if off := alice.offsetOf(t, oldest); off < pos-24 || off > pos+24 {
			t.Errorf("after loading older messages the one at the top moved from %.0f to %.0f px", pos, off)
		}
		shot(t, alice, "long-2-desktop-older")

		// Scrolled up, a new message shows the button and moves nothing.
		a := eval[anchor](t, alice, anchorJS)
		bobSays("up1", `{"room":"lobby"}`, "while you were reading")
		alice.waitJS(t, "new-messages button", `(() => { const l = `+layoutJS+`; return l.jumpShown })()`)
		if off := alice.offsetOf(t, a.Seq); off < a.Offset-2 || off > a.Offset+2 {
			t.Errorf("an incoming message moved the view: message %s from %.0f to %.0f px", a.Seq, a.Offset, off)
		}
		if l := alice.layout(t); l.NewestInView || !strings.Contains(l.JumpText, "1") {
			t.Errorf("scrolled up: newest in view %v, button %q", l.NewestInView, l.JumpText)
		}
		shot(t, alice, "long-3-desktop-new-below")
		alice.do(t, chromedp.Click(chromedp.ID("jump")))
		alice.checkOpenAtNewest(t, "after the button", "while you were reading")
		alice.waitJS(t, "button gone", `document.querySelector('#jump').hidden`)

		// At the bottom, a new message keeps the view at the bottom.
		bobSays("b1", `{"room":"lobby"}`, "at the bottom")
		alice.checkOpenAtNewest(t, "receiving at the bottom", "at the bottom")

		// Scrolled up, your own message takes you to the bottom.
		eval[bool](t, alice, `(() => { const b = document.querySelector('#messages'); b.scrollTop = b.scrollHeight / 2; return true })()`)
		alice.say(t, "my own words")
		alice.checkOpenAtNewest(t, "after my send", "my own words")
		alice.waitJS(t, "sent", countMessages("my own words")+` === 1`)

		// A reload opens at the newest message, with nothing in red.
		alice.takeErrors()
		alice.do(t, chromedp.Reload())
		alice.checkOpenAtNewest(t, "after reload", "my own words")
		alice.waitJS(t, "connected", `document.querySelector('#conn-state').dataset.state === 'connected'`)
		if e := alice.takeErrors(); len(e) > 0 {
			t.Errorf("logged-in page load: console errors %v", e)
		}

		// A private conversation says it is one, with whom, and opens at
		// its newest message.
		alice.openDM(t, "Bob")
		alice.checkOpenAtNewest(t, "private", fmt.Sprintf("private %03d", dmMessages-1))
		alice.waitJS(t, "private header", `document.querySelector('#conv-sub').textContent.includes('@bob') && /private/i.test(document.querySelector('#conv-sub').textContent)`)
		if n := eval[int](t, alice, `document.querySelectorAll('#online-list li .you').length`); n != 1 {
			t.Errorf("own entry marked %d times", n)
		}
		if eval[bool](t, alice, `[...document.querySelectorAll('#online-list li')].some(li => li.querySelector('.you') && li.querySelector('.dm'))`) {
			t.Error("the page offers a private conversation with yourself")
		}
		shot(t, alice, "long-4-desktop-private")
		if v := alice.axeViolations(t, axe); len(v) > 0 {
			t.Errorf("chat on a desktop: axe: %v", v)
		}
	})

	t.Run("phone", func(t *testing.T) {
		alice.do(t, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile), chromedp.Reload())
		alice.waitJS(t, "chat view", `!document.querySelector('#chat-view').hidden`)
		alice.checkOpenAtNewest(t, "phone after reload", "my own words")
		l := alice.layout(t)
		if l.Width > 390 || l.HeaderHeight > 60 {
			t.Errorf("phone: page %d px wide, header %.0f px high (one line is under 60)", l.Width, l.HeaderHeight)
		}
		shot(t, alice, "long-5-phone-open")
		// One incoming message keeps the composer on the screen.
		bobSays("p1", `{"room":"lobby"}`, "to the phone")
		alice.checkOpenAtNewest(t, "phone receiving", "to the phone")

		// With the drawer closed, a private message shows in the header.
		bobSays("p2", fmt.Sprintf(`{"user":%q}`, ids["alice"]), "psst, on your phone")
		alice.waitJS(t, "unread badge in view", `(() => {
		  const b = document.querySelector('#menu-unread'), r = b.getBoundingClientRect();
		  return !b.hidden && b.textContent === '1' && r.top >= 0 && r.bottom <= innerHeight && r.right <= innerWidth && r.width > 0
		})()`)
		if label := eval[string](t, alice, `document.querySelector('#toggle-label').textContent`); label != "Bob @bob" {
			t.Errorf("toggle names %q, want the conversation with the unread message (Bob @bob)", label)
		}
		shot(t, alice, "long-6-phone-unread")
		if v := alice.axeViolations(t, axe); len(v) > 0 {
			t.Errorf("chat on a phone: axe: %v", v)
		}
		// The drawer opens from the toggle and Escape closes it.
		alice.do(t, chromedp.Click(chromedp.ID("toggle-side")))
		alice.waitJS(t, "drawer open", `getComputedStyle(document.querySelector('#side')).display !== 'none'`)
		shot(t, alice, "long-7-phone-drawer")
		alice.do(t, chromedp.KeyEvent("\x1b"))
		alice.waitJS(t, "drawer closed", `getComputedStyle(document.querySelector('#side')).display === 'none' && document.activeElement.id === 'toggle-side'`)

		// The smallest phone still has one header line and the composer.
		alice.do(t, chromedp.EmulateViewport(320, 568, chromedp.EmulateMobile))
		alice.checkOpenAtNewest(t, "320x568", "to the phone")
		if l := alice.layout(t); l.Width > 320 || l.HeaderHeight > 60 {
			t.Errorf("320x568: page %d px wide, header %.0f px high", l.Width, l.HeaderHeight)
		}
		shot(t, alice, "long-7b-phone-320")
		alice.do(t, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	})

	t.Run("language", func(t *testing.T) {
		if m := eval[map[string][]string](t, alice, `import('/i18n.js').then(m => m.missingKeys())`); len(m["en"])+len(m["zh"])+len(m["page"]) > 0 {
			t.Errorf("message keys missing: %v", m)
		}
		labels := `[...document.querySelectorAll('[aria-label]')].filter(e => e.getClientRects().length > 0 || e.id).map(e => (e.id || e.className) + '=' + e.getAttribute('aria-label'))`
		en := eval[[]string](t, alice, labels)
		badge := eval[string](t, alice, `document.querySelector('#conn-state').textContent`)
		eval[bool](t, alice, `(() => { const s = document.querySelector('#lang'); s.value = 'zh'; s.dispatchEvent(new Event('change')); return true })()`)
		alice.waitJS(t, "chinese", `document.documentElement.lang === 'zh-CN'`)
		if now := eval[string](t, alice, `document.querySelector('#conn-state').textContent`); now == badge {
			t.Errorf("connection badge still %q after switching language", now)
		}
		zh := eval[[]string](t, alice, labels)
		if len(zh) != len(en) {
			t.Fatalf("accessible names: %d in English, %d in Chinese", len(en), len(zh))
		}
		for i := range en {
			if en[i] == zh[i] && !strings.HasSuffix(en[i], "=1") {
				t.Errorf("accessible name not translated: %s", en[i])
			}
		}
		shot(t, alice, "long-8-phone-chinese")
	})
}
