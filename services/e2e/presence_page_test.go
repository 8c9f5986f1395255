package e2e_test

import (
	"fmt"
	"testing"

	"github.com/chromedp/chromedp"
)

// The online panel beyond PRESENCE_LIST_MAX online, as a person meets it:
// the total in the heading, the people they talk to, a search of everyone
// else online that opens a private conversation, and, once few are online
// again, everyone listed as before. On a laptop and on phones, by
// keyboard, clean for axe-core.

// onlineHeadJS is the online panel's heading.
const onlineHeadJS = `document.querySelector('#online-title').textContent.replace(/\s+/g, ' ').trim()`

// onlinePanelJS says which parts of the panel show: "search contacts
// results more", each only when shown.
const onlinePanelJS = `['online-search', 'online-contacts-title', 'online-results', 'online-more']
  .filter(id => !document.getElementById(id).hidden).map(id => id.replace(/^online-|-title$/g, '')).join(' ')`

// resultsJS lists the search results as onlineJS lists the online list.
const resultsJS = `[...document.querySelectorAll('#online-results li')].map(li =>
  li.querySelector('.who .name').textContent + ' ' + li.querySelector('.who .handle').textContent + (li.querySelector('.you') ? ' +you' : '')).join(', ')`

// onlineStatusJS is the search's status line.
const onlineStatusJS = `document.querySelector('#online-status').textContent`

// countOnlineRequests has the page count the online requests it sends
// (window.onlineAsked).
func (b *browser) countOnlineRequests(t *testing.T) {
	t.Helper()
	eval[bool](t, b, `(() => {
	  if (window.onlineAsked !== undefined) return true;
	  window.onlineAsked = 0;
	  const send = WebSocket.prototype.send;
	  WebSocket.prototype.send = function (data) {
	    if (JSON.parse(data).type === 'online') window.onlineAsked++;
	    return send.call(this, data);
	  };
	  return true })()`)
}

// typeQuery puts each of texts into the search box in turn, as quick
// typing does, within one task: the page asks once typing pauses.
func (b *browser) typeQuery(t *testing.T, texts ...string) {
	t.Helper()
	eval[bool](t, b, `(() => { const q = document.querySelector('#online-query');
	  for (const v of `+jsonStrings(texts)+`) { q.value = v; q.dispatchEvent(new Event('input', { bubbles: true })) }
	  return true })()`)
}

func jsonStrings(ss []string) string {
	out := "["
	for i, s := range ss {
		if i > 0 {
			out += ","
		}
		out += jsonString(s)
	}
	return out + "]"
}

// TestBrowserPartialPresence: with PRESENCE_LIST_MAX=3 and four people
// online across two gateways, ann's page says "4 online" and lists only
// bob, whom she talks to; searching "Ca" (typed quickly: one request)
// finds cat, and the result's button opens a private conversation that
// reaches her. With 107 online a search for "fan" shows 100 and "Show
// more people" the other three. Once people leave until two are online
// (a partial list lasts until a tenth fewer than the limit, at least one
// fewer, are online), the whole list is back, without search; past three
// again, the search is back, empty, and with none of ann's contacts
// online the panel says so.
func TestBrowserPartialPresence(t *testing.T) {
	const (
		pw   = "partial-page-2026"
		fans = 103
	)
	s := startBrowserStackWith(t, []string{"REGISTRATIONS_PER_ADDRESS=1000"}, append(roomsEnv, "PRESENCE_LIST_MAX=3")...)
	axe := axeSource(t)
	annID, _ := registerLogin(t, s.gateways[0], "ann", "Ann", pw)
	_, bobCookie := registerLogin(t, s.gateways[1], "bob", "Bob", pw)
	_, catCookie := registerLogin(t, s.gateways[0], "cat", "Cat", pw)
	_, danCookie := registerLogin(t, s.gateways[1], "dan", "Dan", pw)
	bob, _ := dialChat(t, s.gateways[1], bobCookie, 0)
	bob.say(t, "b1", toUser(annID), "we are contacts now")
	cat, _ := dialChat(t, s.gateways[0], catCookie, 0)
	dan, _ := dialChat(t, s.gateways[1], danCookie, 0)

	ann := newBrowser(t, "partial-ann", s.gateways[0])
	ann.login(t, "ann", pw)
	ann.viewport(t, 1280, 800)
	ann.waitJS(t, "the total and bob alone", onlineHeadJS+` === '4 online' && `+onlineJS+` === 'Bob @bob'`)
	if got := eval[string](t, ann, onlinePanelJS); got != "search contacts" {
		t.Errorf("panel shows %q, want the search and the contacts", got)
	}
	if got := eval[string](t, ann, `document.querySelector('#online-contacts-title').textContent`); got != "People you talk to" {
		t.Errorf("contacts heading %q", got)
	}
	shot(t, ann, "1-partial-1280x800")
	ann.checkClean(t, axe, "partial list at 1280x800")

	// Typed quickly, "Ca" is one request; cat is found, with the count.
	ann.countOnlineRequests(t)
	ann.typeQuery(t, "C", "Ca")
	ann.waitJS(t, "cat found", resultsJS+` === 'Cat @cat' && `+onlineStatusJS+` === '1 person online matches'`)
	if got := eval[string](t, ann, onlinePanelJS); got != "search results" {
		t.Errorf("while searching the panel shows %q, want the search and its results", got)
	}
	if n := eval[int](t, ann, `window.onlineAsked`); n != 1 {
		t.Errorf("%d online requests for one burst of typing, want 1", n)
	}
	shot(t, ann, "2-search-1280x800")
	ann.checkClean(t, axe, "search results at 1280x800")

	// By keyboard: the result's button opens the conversation with cat,
	// and what ann writes there reaches her.
	eval[bool](t, ann, `(() => { document.querySelector('#online-results .dm').focus(); return true })()`)
	ann.do(t, chromedp.KeyEvent("\r"))
	ann.waitJS(t, "conversation with cat", `document.querySelector('#conv-title .name')?.textContent === 'Cat' && document.activeElement.id === 'msg'`)
	ann.say(t, "found you, cat")
	cat.waitFor(t, "ann's message", func(o map[string]any) bool { return o["type"] == "message" && o["text"] == "found you, cat" })

	// No one else matches: the page says so. Escape in the box empties
	// it and the contacts are back.
	ann.typeQuery(t, "zz")
	ann.waitJS(t, "nobody found", onlineStatusJS+` === 'No one online matches "zz".' && `+resultsJS+` === ''`)
	ann.do(t, chromedp.Focus(chromedp.ID("online-query")), chromedp.KeyEvent("\x1b"))
	ann.waitJS(t, "search emptied", `document.querySelector('#online-query').value === '' && `+onlinePanelJS+` === 'search contacts' && `+onlineStatusJS+` === ''`)
	// Having talked, cat is one of ann's contacts now.
	ann.waitJS(t, "cat a contact", onlineJS+` === 'Bob @bob, Cat @cat'`)

	// 107 online: the total follows (online_count), and a search for
	// "fan" pages: 100, then the other three.
	var fanSockets []*chatSocket
	for i := range fans {
		gw := s.gateways[i%2]
		_, cookie := registerLogin(t, gw, fmt.Sprintf("fan%03d", i), fmt.Sprintf("Fan %03d", i), pw)
		fan, _ := dialChat(t, gw, cookie, 0)
		fanSockets = append(fanSockets, fan)
	}
	ann.waitJS(t, "107 online", onlineHeadJS+` === '107 online'`)
	ann.do(t, chromedp.SendKeys(chromedp.ID("online-query"), "fan\r"))
	ann.waitJS(t, "a page of fans", `document.querySelectorAll('#online-results li').length === 100 && `+onlineStatusJS+` === '103 people online match' && `+onlinePanelJS+` === 'search results more'`)
	eval[bool](t, ann, `(() => { document.querySelector('#online-more').scrollIntoView(); return true })()`)
	shot(t, ann, "2b-more-1280x800")
	ann.checkClean(t, axe, "a page of results")
	ann.do(t, chromedp.Click(chromedp.ID("online-more")))
	ann.waitJS(t, "every fan", `document.querySelectorAll('#online-results li').length === 103 && document.querySelector('#online-more').hidden`)
	// Focus went on to the first of the page "Show more" brought.
	if got := eval[string](t, ann, `document.activeElement.getAttribute('aria-label') || document.activeElement.id`); got != "Send Fan 100 @fan100 a private message" {
		t.Errorf("focus after show more: %q", got)
	}
	if got := eval[string](t, ann, `[...document.querySelectorAll('#online-results .name')].slice(98, 101).map(e => e.textContent).join(', ')`); got != "Fan 098, Fan 099, Fan 100" {
		t.Errorf("results around the page's end: %q", got)
	}
	ann.typeQuery(t, "")
	ann.waitJS(t, "search emptied", onlinePanelJS+` === 'search contacts'`)

	// On phones, in the drawer; in Chinese too.
	for _, vp := range []struct{ w, h int64 }{{390, 844}, {320, 568}} {
		size := fmt.Sprintf("%dx%d", vp.w, vp.h)
		ann.viewport(t, vp.w, vp.h)
		ann.openDrawer(t)
		ann.checkFits(t, "drawer "+size)
		shot(t, ann, "3-partial-"+size)
		ann.checkClean(t, axe, "partial list at "+size)
		ann.typeQuery(t, "Da")
		ann.waitJS(t, "dan found at "+size, resultsJS+` === 'Dan @dan'`)
		shot(t, ann, "4-search-"+size)
		ann.checkHandles(t, "4-search-"+size)
		ann.checkClean(t, axe, "search results at "+size)
		ann.typeQuery(t, "")
		ann.waitJS(t, "search emptied at "+size, onlinePanelJS+` === 'search contacts'`)
		ann.do(t, chromedp.Click(chromedp.ID("toggle-side")))
	}
	eval[bool](t, ann, `(() => { const s = document.querySelector('#lang'); s.value = 'zh'; s.dispatchEvent(new Event('change')); return true })()`)
	ann.openDrawer(t)
	ann.waitJS(t, "in Chinese", onlineHeadJS+` === '107 人在线' && document.querySelector('#online-contacts-title').textContent === '常联系的人'`)
	shot(t, ann, "5-partial-zh-320x568")
	ann.checkClean(t, axe, "partial list in Chinese")
	eval[bool](t, ann, `(() => { const s = document.querySelector('#lang'); s.value = 'en'; s.dispatchEvent(new Event('change')); return true })()`)
	ann.viewport(t, 1280, 800)

	// Everyone but ann and bob leaves: two online, the whole list again,
	// ann herself in it, no search.
	ann.typeQuery(t, "fan")
	ann.waitJS(t, "searching fans", `document.querySelectorAll('#online-results li').length > 0`)
	for _, c := range append(fanSockets, cat, dan) {
		c.close()
	}
	ann.waitJS(t, "everyone listed", onlineJS+` === 'Ann @ann +you, Bob @bob' && `+onlineHeadJS+` === 'Online (2)'`)
	if got := eval[string](t, ann, onlinePanelJS+` + '|' + document.querySelector('#online-query').value + '|' + `+onlineStatusJS); got != "||" {
		t.Errorf("with everyone listed the panel shows %q, want no search", got)
	}
	shot(t, ann, "6-everyone-again-1280x800")
	ann.checkClean(t, axe, "everyone listed again")

	// Four online: partial again, the search back and empty. Once bob
	// leaves too, none of ann's contacts is online, and the panel says so.
	_, eveCookie := registerLogin(t, s.gateways[0], "eve", "Eve", pw)
	dan, _ = dialChat(t, s.gateways[1], danCookie, 0)
	eve, _ := dialChat(t, s.gateways[0], eveCookie, 0)
	ann.waitJS(t, "partial again", onlineHeadJS+` === '4 online' && `+onlineJS+` === 'Bob @bob' && `+onlinePanelJS+` === 'search contacts'`)
	bob.close()
	ann.waitJS(t, "no contact online", onlineHeadJS+` === '3 online' && `+onlineJS+` === '' &&
	  document.querySelector('#online-empty').textContent === 'None of the people you talk to is online.' && !document.querySelector('#online-empty').hidden`)
	shot(t, ann, "7-no-contact-online-1280x800")
	ann.checkClean(t, axe, "no contact online")
	dan.close()
	eve.close()
	ann.waitJS(t, "ann alone", onlineHeadJS+` === 'Online (1)' && `+onlineJS+` === 'Ann @ann +you' && document.querySelector('#online-empty').hidden`)
	if e := ann.takeErrors(); len(e) > 0 {
		t.Errorf("console errors: %v", e)
	}
}
