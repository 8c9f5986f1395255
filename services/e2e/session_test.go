package e2e_test

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// login goes through the login form as a person would.
func (b *browser) login(t *testing.T, account, password string) {
	t.Helper()
	b.do(t,
		chromedp.Navigate(b.origin+"/"),
		chromedp.WaitVisible(chromedp.ID("login-form")),
		chromedp.SendKeys(chromedp.ID("login-account"), account),
		chromedp.SendKeys(chromedp.ID("login-password"), password),
		chromedp.Click(chromedp.ID("login-submit")),
		chromedp.WaitVisible(chromedp.ID("chat-view")),
	)
	b.waitJS(t, "connected", `document.querySelector('#conn-state').dataset.state === 'connected'`)
}

// changePassword fills the account dialog's password form and submits it.
func (b *browser) changePassword(t *testing.T, current, next string) {
	t.Helper()
	eval[bool](t, b, `(() => { document.getElementById('password-form').reset(); return true })()`)
	b.do(t,
		chromedp.SendKeys(chromedp.ID("password-current"), current),
		chromedp.SendKeys(chromedp.ID("password-new"), next),
		chromedp.Click(chromedp.ID("password-submit")),
	)
}

func fieldError(field string) string {
	return `document.querySelector('#password-form .field-error[data-for="` + field + `"]').textContent`
}

// TestBrowserSessionControl: one person on a phone and a desktop, each on
// its own gateway. A password change on the phone logs the desktop out
// and keeps the phone chatting (it reconnects with its fresh cookie);
// "log out everywhere" then logs the phone out too, and the new password
// logs in again. Wrong input is shown as text at its field, and the
// account dialog passes axe-core.
func TestBrowserSessionControl(t *testing.T) {
	const first, second = "quiet-meadow-31", "amber-forest-58"
	s := startBrowserStack(t)
	phone := newBrowser(t, "phone", s.gateways[0])
	desktop := newBrowser(t, "desktop", s.gateways[1])
	phone.registerAndLogin(t, "olga", "Olga", first)
	desktop.login(t, "olga", first)

	phone.do(t, chromedp.Click(chromedp.ID("account")))
	phone.waitJS(t, "account dialog", `document.querySelector('#account-dialog').open`)
	if v := phone.axeViolations(t, axeSource(t)); len(v) > 0 {
		t.Errorf("axe on the account dialog: %v", v)
	}
	shot(t, phone, "account-dialog")

	inputErrors := []struct {
		name, current, next, field, text string
	}{
		{"wrong current password", "not-my-password", second, "current", "The current password is wrong."},
		{"common new password", first, "password1", "new", "This password is too common. Choose another."},
		{"short new password", first, "short", "new", "8 to 128 characters."},
	}
	for _, tt := range inputErrors {
		phone.changePassword(t, tt.current, tt.next)
		phone.waitJS(t, tt.name, fieldError(tt.field)+` === `+js(tt.text))
	}
	// None of them changed anything: the desktop is still chatting.
	desktop.say(t, "still here")
	phone.waitJS(t, "desktop's message", messagesContain("still here"))

	phone.changePassword(t, first, second)
	phone.waitJS(t, "password changed", `document.querySelector('#password-form .form-done').textContent !== ''`)
	desktop.waitJS(t, "desktop logged out", `!document.querySelector('#login-form').closest('main').hidden`)
	phone.do(t, chromedp.Click(chromedp.ID("account-close")))
	phone.waitJS(t, "phone reconnected", `!document.querySelector('#chat-view').hidden &&
	  document.querySelector('#conn-state').dataset.state === 'connected'`)
	phone.say(t, "after the change")
	phone.waitJS(t, "stored", countMessages("after the change")+` === 1`)
	shot(t, phone, "after-password-change")

	phone.do(t, chromedp.Click(chromedp.ID("account")), chromedp.Click(chromedp.ID("logout-all")))
	phone.waitJS(t, "phone logged out", `!document.querySelector('#login-form').closest('main').hidden &&
	  document.querySelector('#login-form .form-error').textContent === 'You were logged out everywhere.'`)
	phone.do(t, chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("login-form")))

	desktop.login(t, "olga", second)
	desktop.say(t, "back with the new password")
	desktop.waitJS(t, "stored", countMessages("back with the new password")+` === 1`)
	for _, b := range []*browser{phone, desktop} {
		for _, e := range b.takeErrors() {
			if strings.Contains(e, "uncaught") {
				t.Errorf("%s: %s", b.name, e)
			}
		}
	}
}
