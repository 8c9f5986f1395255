package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natter/natter/services/chat"
	"github.com/natter/natter/services/natstest"
	"github.com/natter/natter/services/servicetest"
)

// recipeMarker starts the README's block of `go tool nats` recipes.
const recipeMarker = "<!-- recipes:"

// recipeChecks says, for every recipe of the README (its arguments after
// `go tool nats`), what its output must show. A recipe without a check, or
// a check without a recipe, fails the test: README and test move together.
var recipeChecks = map[string]func(t *testing.T, natsURL string, args []string){
	"server check connection": expectOutput("OK Connection"),
	"stream ls":               expectOutput("CHAT"),
	"kv ls":                   expectOutput("presence", "read_state", "rooms"),
	"micro ls":                expectOutput("auth", "presence"),
	"req auth.keys ''":        expectOutput(`"kty":"OKP"`),
	"req presence.online ''":  expectOutput(`"users":`, `"rev":`),
	"sub 'chat.>'":            checkSubChat,
}

// readRecipes returns the `go tool nats` lines of the README's recipe block.
func readRecipes(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recipes []string
	state := 0 // 0 before the marker, 1 before the code block, 2 inside it
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case state == 0 && strings.HasPrefix(line, recipeMarker):
			state = 1
		case state == 1 && strings.HasPrefix(line, "```"):
			state = 2
		case state == 2 && strings.HasPrefix(line, "```"):
			return recipes
		case state == 2:
			cmd, _, _ := strings.Cut(line, "#")
			cmd = strings.TrimSpace(cmd)
			rest, ok := strings.CutPrefix(cmd, "go tool nats ")
			if !ok {
				t.Fatalf("README recipe %q does not start with `go tool nats`", line)
			}
			recipes = append(recipes, rest)
		}
	}
	t.Fatalf("README has no complete recipe block after %q", recipeMarker)
	return nil
}

// shellWords splits a recipe like a shell: spaces separate, single quotes
// group.
func shellWords(s string) []string {
	var words []string
	var cur strings.Builder
	quoted, inWord := false, false
	for _, r := range s {
		switch {
		case r == '\'':
			quoted, inWord = !quoted, true
		case r == ' ' && !quoted:
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

func checkRecipes(t *testing.T, natsURL string) {
	recipes := readRecipes(t)
	seen := map[string]bool{}
	for _, r := range recipes {
		seen[r] = true
		check, ok := recipeChecks[r]
		if !ok {
			t.Errorf("README recipe `go tool nats %s` has no check in recipeChecks", r)
			continue
		}
		t.Run(r, func(t *testing.T) { check(t, natsURL, shellWords(r)) })
	}
	for r := range recipeChecks {
		if !seen[r] {
			t.Errorf("recipeChecks has %q, which the README no longer shows", r)
		}
	}
}

// natsCLI is `go tool nats -s natsURL args...` with a context of its own,
// so the developer's saved nats contexts play no part.
func natsCLI(ctx context.Context, t *testing.T, natsURL string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "go", append([]string{"tool", "nats", "-s", natsURL}, args...)...)
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+t.TempDir(), "NATS_CONTEXT=")
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func expectOutput(wants ...string) func(t *testing.T, natsURL string, args []string) {
	return func(t *testing.T, natsURL string, args []string) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // first use compiles natscli
		defer cancel()
		out, err := natsCLI(ctx, t, natsURL, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("nats %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		for _, want := range wants {
			if !strings.Contains(string(out), want) {
				t.Fatalf("nats %s output lacks %q:\n%s", strings.Join(args, " "), want, out)
			}
		}
	}
}

// checkSubChat runs the subscription until it has shown one message, and
// stores chat messages until it has.
func checkSubChat(t *testing.T, natsURL string, args []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := natsCLI(ctx, t, natsURL, append(args, "--count=1")...)
	out := &servicetest.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	js := natstest.JetStream(t, natsURL)
	subject, err := chat.RoomSubject(chat.Lobby)
	if err != nil {
		t.Fatal(err)
	}
	msg := chat.Message{ID: "recipe-check", From: chat.User{ID: "e2e", Name: "e2e"}, To: chat.To{Room: chat.Lobby}, Text: "seen by nats sub", TS: time.Now().UTC()}
	payload, _ := json.Marshal(msg)
	// The CLI subscribes once compiled and connected; publish until it has
	// printed a message (at most one per 200 ms, bounded by ctx).
	for i := 0; ; i++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("nats %s: %v\n%s", strings.Join(args, " "), err, out.String())
			}
			if !strings.Contains(out.String(), "seen by nats sub") {
				t.Fatalf("nats %s did not show the message:\n%s", strings.Join(args, " "), out.String())
			}
			return
		case <-ctx.Done():
			t.Fatalf("nats %s showed nothing within the time limit:\n%s", strings.Join(args, " "), out.String())
		case <-time.After(200 * time.Millisecond):
		}
		if _, err := js.Publish(ctx, subject, payload, jetstream.WithMsgID(fmt.Sprintf("recipe-%d", i))); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
}
