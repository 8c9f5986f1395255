package e2e_test

import (
	"context"
	"fmt"
	"iter"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/natter/natter/services/mongotest"
	"github.com/natter/natter/services/natstest"
	"github.com/natter/natter/services/servicetest"
)

// service is a service binary run by a test.
type service struct {
	cmd    *exec.Cmd
	out    *servicetest.Buffer
	exited chan struct{}
}

func startService(t *testing.T, name string, env ...string) *service {
	t.Helper()
	return startProcess(t, filepath.Join(binDir, name), nil, env...)
}

// startProcess runs the program at path, stopped when the test ends.
func startProcess(t *testing.T, path string, args []string, env ...string) *service {
	t.Helper()
	name := filepath.Base(path)
	p := &service{out: &servicetest.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Env = append(cleanEnv(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out.String())
		}
	})
	return p
}

// stop ends the process with SIGTERM, as an operator would.
func (p *service) stop(t *testing.T) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		t.Errorf("%s did not stop within 15s of SIGTERM", p.cmd.Path)
	}
}

// browserStack is NATS and FerretDB in-process, and auth, presence and
// two gateways as binaries, so a gateway can be stopped and started again.
type browserStack struct {
	nats     string // NATS URL
	env      []string
	gateways [2]string // base URLs
	gw       [2]*service
}

// startBrowserStack starts the stack; gatewayEnv is added to both
// gateways' environment.
func startBrowserStack(t *testing.T, gatewayEnv ...string) *browserStack {
	t.Helper()
	return startBrowserStackWith(t, nil, gatewayEnv...)
}

// startBrowserStackWith is startBrowserStack with authEnv added to auth's
// environment.
func startBrowserStackWith(t *testing.T, authEnv []string, gatewayEnv ...string) *browserStack {
	t.Helper()
	ns := natstest.Start(t)
	db := mongotest.Start(t)
	addrs := servicetest.FreeAddrs(t, 4)
	s := &browserStack{nats: ns.URL(), env: append([]string{"NATS_URL=" + ns.URL(), "AUTH_URL=http://" + addrs[0]}, gatewayEnv...)}
	startService(t, "auth", append([]string{"TRUSTED_PROXIES=127.0.0.1", "NATS_URL=" + ns.URL(), "MONGO_URI=" + db.URI(), "HTTP_ADDR=" + addrs[0],
		"AUTH_SIGNING_KEY_FILE=" + filepath.Join(t.TempDir(), "key.pem"), "AUTH_GENERATE_SIGNING_KEY=true",
		"ARGON2_MEMORY_KIB=4096", "ARGON2_ITERATIONS=1"}, authEnv...)...)
	startService(t, "presence", "NATS_URL="+ns.URL(), "HTTP_ADDR="+addrs[1])
	for i := range 2 {
		s.gateways[i] = "http://" + addrs[2+i]
		s.startGateway(t, i)
	}
	servicetest.WaitStatus(t, "http://"+addrs[0]+"/readyz", 200, 60*time.Second)
	return s
}

func (s *browserStack) startGateway(t *testing.T, i int) {
	t.Helper()
	addr := strings.TrimPrefix(s.gateways[i], "http://")
	s.gw[i] = startService(t, "gateway", append(s.env, "HTTP_ADDR="+addr)...)
	servicetest.WaitStatus(t, s.gateways[i]+"/readyz", 200, 60*time.Second)
}

// browser is one person's headless Chromium, with its own profile, so its
// cookies are its own.
type browser struct {
	ctx    context.Context
	name   string
	origin string

	mu       sync.Mutex
	dialogs  []string
	requests []string
	errors   []string // console errors, uncaught exceptions, failed loads the console reports
}

// chromium finds Debian's chromium (.ci/run installs it).
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	t.Fatal("chromium not found: install Debian's chromium (apt-get install chromium), as .ci/run does, or set CHROMIUM")
	return ""
}

func newBrowser(t *testing.T, name, origin string) *browser {
	t.Helper()
	dir := t.TempDir()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.WindowSize(1100, 750),
		chromedp.Env("XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "XDG_CACHE_HOME="+filepath.Join(dir, "cache")),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &browser{ctx: ctx, name: name, origin: origin}
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, cdplog.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, runtime.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	// Subscribed before the first navigation, so nothing is missed.
	record(chromedp.Events(ctx, page.JavascriptDialogOpening), &b.mu, &b.dialogs,
		func(ev page.EventJavascriptDialogOpening) string { return ev.Message })
	record(chromedp.Events(ctx, network.RequestWillBeSent), &b.mu, &b.requests,
		func(ev network.EventRequestWillBeSent) string { return ev.Request.URL })
	record(chromedp.Events(ctx, network.WebSocketCreated), &b.mu, &b.requests,
		func(ev network.EventWebSocketCreated) string { return ev.URL })
	// Everything a person with the console open would see in red.
	record(filter(chromedp.Events(ctx, cdplog.EntryAdded), func(ev cdplog.EventEntryAdded) bool {
		return ev.Entry.Level == cdplog.EntryLevelError
	}), &b.mu, &b.errors, func(ev cdplog.EventEntryAdded) string { return ev.Entry.URL + ": " + ev.Entry.Text })
	record(filter(chromedp.Events(ctx, runtime.ConsoleAPICalled), func(ev runtime.EventConsoleAPICalled) bool {
		return ev.Type == runtime.ConsoleAPICalledTypeError
	}), &b.mu, &b.errors, func(ev runtime.EventConsoleAPICalled) string { return "console.error" })
	record(chromedp.Events(ctx, runtime.ExceptionThrown), &b.mu, &b.errors,
		func(ev runtime.EventExceptionThrown) string { return "uncaught: " + ev.ExceptionDetails.Text })
	return b
}

// record appends what of each event matters to *into until the browser
// goes away.
func record[E any](events iter.Seq2[E, error], mu *sync.Mutex, into *[]string, what func(E) string) {
	go func() {
		for ev, err := range events {
			if err != nil {
				return
			}
			mu.Lock()
			*into = append(*into, what(ev))
			mu.Unlock()
		}
	}()
}

// filter passes on the events keep accepts.
func filter[E any](events iter.Seq2[E, error], keep func(E) bool) iter.Seq2[E, error] {
	return func(yield func(E, error) bool) {
		for ev, err := range events {
			if (err != nil || keep(ev)) && !yield(ev, err) {
				return
			}
		}
	}
}

// takeErrors returns the console errors recorded so far and forgets them.
func (b *browser) takeErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.errors
	b.errors = nil
	return e
}

func (b *browser) do(t *testing.T, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", b.name, err)
	}
}

// eval runs JavaScript and returns its value.
func eval[T any](t *testing.T, b *browser, js string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("%s: eval %s: %v", b.name, js, err)
	}
	return v
}

// waitJS polls a JavaScript condition until it is true.
func (b *browser) waitJS(t *testing.T, what, js string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		shot(t, b, "failed-"+strings.ReplaceAll(what, " ", "-"))
		t.Fatalf("%s: waiting for %s: %v", b.name, what, err)
	}
}

// shot saves a screenshot as a test artifact (services/e2e/artifacts, or
// $ARTIFACTS_DIR), not committed.
func shot(t *testing.T, b *browser, name string) {
	dir := os.Getenv("ARTIFACTS_DIR")
	if dir == "" {
		dir = "artifacts"
	}
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return
	}
	_ = os.MkdirAll(dir, 0o755)
	_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%s.png", b.name, name)), png, 0o644)
}

// js quotes s as a JavaScript string literal.
func js(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`)
	return "'" + r.Replace(s) + "'"
}

// registerAndLogin goes through both forms as a person would.
func (b *browser) registerAndLogin(t *testing.T, account, name, password string) {
	t.Helper()
	b.do(t,
		chromedp.Navigate(b.origin+"/"),
		chromedp.WaitVisible(chromedp.ID("register-form")),
		chromedp.SendKeys(chromedp.ID("register-account"), account),
		chromedp.SendKeys(chromedp.ID("register-name"), name),
		chromedp.SendKeys(chromedp.ID("register-password"), password),
		chromedp.Click(chromedp.ID("register-submit")),
	)
	b.waitJS(t, "registered", `document.querySelector('#login-account').value === `+js(account))
	b.do(t,
		chromedp.SendKeys(chromedp.ID("login-password"), password),
		chromedp.Click(chromedp.ID("login-submit")),
		chromedp.WaitVisible(chromedp.ID("chat-view")),
	)
	b.waitJS(t, "connected", `document.querySelector('#conn-state').dataset.state === 'connected'`)
}

// say types text into the composer and presses Enter.
func (b *browser) say(t *testing.T, text string) {
	t.Helper()
	b.do(t, chromedp.SendKeys(chromedp.ID("msg"), text+"\r"))
}

func messagesContain(text string) string {
	return `[...document.querySelectorAll('#messages .msg .text')].some(e => e.textContent === ` + js(text) + `)`
}

func countMessages(text string) string {
	return `[...document.querySelectorAll('#messages .msg:not(.pending) .text')].filter(e => e.textContent === ` + js(text) + `).length`
}

func TestBrowserChat(t *testing.T) {
	s := startBrowserStack(t)
	alice := newBrowser(t, "alice", s.gateways[0])
	bob := newBrowser(t, "bob", s.gateways[0])
	carol := newBrowser(t, "carol", s.gateways[1])

	const xssName = `<img src=x onerror=alert(1)>`
	alice.registerAndLogin(t, "alice", "A"+xssName, "blue-harbour-42")
	shot(t, alice, "1-logged-in")
	bob.registerAndLogin(t, "bob", "Bob", "amber-river-19")
	// Carol reads Chinese: the switch changes the page's text.
	carol.do(t, chromedp.Navigate(carol.origin+"/"), chromedp.WaitVisible(chromedp.ID("login-form")))
	eval[bool](t, carol, `(() => { const s = document.querySelector('#lang'); s.value = 'zh'; s.dispatchEvent(new Event('change')); return true })()`)
	carol.waitJS(t, "chinese", `document.querySelector('#login-submit').textContent === '登录' && document.documentElement.lang === 'zh-CN'`)
	carol.registerAndLogin(t, "carol", "卡罗尔", "quiet-meadow-77")
	carol.waitJS(t, "chinese chat", `document.querySelector('#send').textContent === '发送'`)

	// Everyone sees everyone online; the name with markup is text.
	for _, b := range []*browser{alice, bob, carol} {
		b.waitJS(t, "three online", `document.querySelectorAll('#online-list li').length === 3`)
		b.waitJS(t, "alice's name as text", `[...document.querySelectorAll('#online-list .name')].some(e => e.textContent === 'A'+`+js(xssName)+`)`)
	}

	// The lobby, with markup and a link in the text.
	const xssText = `<script>alert(2)</script><img src=x onerror=alert(3)> hi, see https://example.com/x`
	alice.say(t, xssText)
	for _, b := range []*browser{alice, bob, carol} {
		b.waitJS(t, "lobby message", messagesContain(xssText))
		if n := eval[int](t, b, `document.querySelectorAll('#messages img, #messages script').length`); n != 0 {
			t.Fatalf("%s: %d elements injected by message text", b.name, n)
		}
		if href := eval[string](t, b, `(document.querySelector('#messages .text a') || {}).href || ''`); href != "https://example.com/x" {
			t.Fatalf("%s: link = %q", b.name, href)
		}
	}
	bob.waitJS(t, "not mine", `!document.querySelector('#messages .msg.mine')`)
	alice.waitJS(t, "mine", `document.querySelector('#messages .msg.mine') !== null`)
	shot(t, bob, "2-lobby")

	// A direct message from alice to bob.
	alice.openDM(t, "Bob")
	alice.waitJS(t, "dm open", `document.querySelector('#conv-title .name').textContent === 'Bob'`)
	alice.say(t, "just between us")
	bob.waitJS(t, "unread dm", `[...document.querySelectorAll('#conv-list .unread')].some(e => e.textContent === '1')`)
	eval[bool](t, bob, `(() => { [...document.querySelectorAll('#conv-list button')].find(e => e.querySelector('.title').textContent.startsWith('A<img')).click(); return true })()`)
	bob.waitJS(t, "dm open at bob", `document.querySelector('#conv-title').textContent.startsWith('A<img')`)
	bob.waitJS(t, "dm received", messagesContain("just between us"))
	shot(t, bob, "3-dm")
	// Carol sees the next lobby message but never the dm.
	bob.do(t, chromedp.Click(chromedp.CSS(`#conv-list button[data-key="room:lobby"]`)))
	bob.say(t, "marker after the dm")
	carol.waitJS(t, "marker", messagesContain("marker after the dm"))
	if eval[bool](t, carol, `document.body.textContent.includes('just between us')`) {
		t.Fatal("carol sees the direct message")
	}

	// On a phone-sized screen the conversations fold behind a button, and
	// nothing is wider than the screen; keyboard: the button opens them.
	bob.do(t, chromedp.EmulateViewport(390, 800, chromedp.EmulateMobile))
	bob.waitJS(t, "phone layout", `getComputedStyle(document.querySelector('#toggle-side')).display !== 'none' && getComputedStyle(document.querySelector('#side')).display === 'none'`)
	if w := eval[int](t, bob, `document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("page is %dpx wide on a 390px screen", w)
	}
	bob.do(t, chromedp.Focus(chromedp.ID("toggle-side")), chromedp.KeyEvent("\r"))
	bob.waitJS(t, "side opened by keyboard", `getComputedStyle(document.querySelector('#side')).display !== 'none'`)
	shot(t, bob, "3b-phone")
	bob.do(t, chromedp.EmulateViewport(1100, 750))

	// A reload keeps the session and the history.
	bob.do(t, chromedp.Reload())
	bob.waitJS(t, "history after reload", messagesContain(xssText))

	// Bob's and alice's gateway restarts mid-conversation.
	s.gw[0].stop(t)
	for _, b := range []*browser{alice, bob} {
		b.waitJS(t, "reconnecting", `document.querySelector('#conn-state').dataset.state === 'reconnecting'`)
	}
	shot(t, bob, "4-reconnecting")
	carol.say(t, "said while their gateway was down")
	alice.do(t, chromedp.Click(chromedp.CSS(`#conv-list button[data-key="room:lobby"]`)))
	alice.say(t, "queued while offline")
	alice.waitJS(t, "pending mark", `document.querySelector('#messages .msg.pending') !== null`)
	s.startGateway(t, 0)
	for _, b := range []*browser{alice, bob} {
		b.waitJS(t, "reconnected", `document.querySelector('#conn-state').dataset.state === 'connected'`)
		b.waitJS(t, "missed message", countMessages("said while their gateway was down")+` === 1`)
		b.waitJS(t, "queued message", countMessages("queued while offline")+` === 1`)
	}
	carol.waitJS(t, "queued message at carol", countMessages("queued while offline")+` === 1`)
	alice.waitJS(t, "nothing pending", `document.querySelector('#messages .msg.pending') === null`)
	shot(t, alice, "5-after-restart")

	// Logging out ends the session, also for a reload.
	alice.do(t, chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("login-form")))
	alice.do(t, chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("login-form")))
	shot(t, alice, "6-logged-out")

	// No script ran, and nothing was asked of another origin.
	for _, b := range []*browser{alice, bob, carol} {
		b.mu.Lock()
		dialogs, requests := b.dialogs, b.requests
		b.mu.Unlock()
		if len(dialogs) > 0 {
			t.Errorf("%s: dialogs opened: %v", b.name, dialogs)
		}
		host := strings.TrimPrefix(b.origin, "http://")
		for _, u := range requests {
			if !strings.HasPrefix(u, "http://"+host+"/") && !strings.HasPrefix(u, "ws://"+host+"/") && !strings.HasPrefix(u, "data:") {
				t.Errorf("%s: request outside the gateway's origin: %s", b.name, u)
			}
		}
		if len(requests) == 0 {
			t.Errorf("%s: no requests recorded: the check saw nothing", b.name)
		}
	}
}
