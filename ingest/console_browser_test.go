package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/startdeliver/segment-destination/shared/emulatortest"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/journey"
)

// chromiumPath finds Debian's chromium; without it the test skips with the
// reason, except under CI=true, where it fails (.ci/run installs it).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium on PATH under CI=true: .ci/run installs Debian's chromium (apt-get install chromium)")
	}
	t.Skip("no chromium on PATH: install Debian's chromium (apt-get install chromium) to run the console's browser test")
	return ""
}

// TestConsoleInBrowser drives the real console page in headless Chromium:
// enter a key, see the account's events, find one by messageId, open its
// journey, and explain an event.
func TestConsoleInBrowser(t *testing.T) {
	chrome := chromiumPath(t)
	s := startIngest(t, "")
	defer s.stop()
	fs := emulatortest.Firestore(t, s.env)
	ctx := context.Background()

	// A record as deliver writes it, for this account, and one of another
	// account that the page must not show.
	acct := envelope.AccountID(s.key)
	now := time.Now().UTC()
	uid := int64(4711)
	rec := &journey.Record{
		AccountID: acct, MessageID: "browser-msg-1", Status: journey.StatusDelivered, Type: "track", Name: "Login Button Clicked",
		UserID: "97980cfea0067", User: &uid, UserCreated: true,
		UserMatch: &journey.Match{Rule: "userId", Field: "externalId", Value: "97980cfea0067"},
		Calls: []journey.Call{{Method: "GET", Route: "/user", Status: 200, Attempt: 1}, {Method: "POST", Route: "/user", Status: 200, Attempt: 1},
			{Method: "POST", Route: "/usage", Status: 200, Attempt: 1}},
		Attempts: 1, ReceivedAt: now, CompletedAt: now, DeliveredAt: &now, TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", ExpireAt: now.Add(time.Hour),
	}
	other := *rec
	other.AccountID, other.MessageID = envelope.AccountID("someone-else"), "browser-msg-other"
	for _, r := range []*journey.Record{rec, &other} {
		if _, err := fs.Collection(s.deliveries).Doc(journey.DocumentID(r.AccountID, r.MessageID)).Set(ctx, r); err != nil {
			t.Fatal(err)
		}
	}

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chrome),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	bctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	defer cancel()

	step := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("console: %s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(sel)))
		step("read "+sel, err)
		return v
	}
	eval := func(expr string) string {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Evaluate[string](expr))
		step("evaluate "+expr, err)
		return v
	}
	step("open the page and enter the key", chromedp.Do(bctx,
		chromedp.Navigate(s.url+"/console/"),
		chromedp.WaitVisible(chromedp.ID("key")),
		chromedp.SendKeys(chromedp.ID("key"), s.key),
		chromedp.Click(chromedp.ID("save-key")),
		// The key saved, the page lists the account's recent events.
		chromedp.WaitVisible(chromedp.CSS("#events tbody button")),
	))
	listed := text("#events tbody")
	href := eval(`location.href`)
	stored := eval(`sessionStorage.getItem("startdeliver.console.key") || ""`)
	cookies := eval(`document.cookie + String(localStorage.length)`)
	step("find by messageId and open the journey", chromedp.Do(bctx,
		chromedp.SendKeys(chromedp.ID("find-id"), "browser-msg-1"),
		chromedp.Click(chromedp.ID("find")),
		chromedp.WaitVisible(chromedp.ID("detail")),
	))
	detailStatus := text("#detail-status")
	calls := text("#detail-calls tbody")
	trace := text("#detail-trace")
	step("explain an event", chromedp.Do(bctx,
		chromedp.SetValue(chromedp.ID("explain-event"), `{"type":"track","event":"Login Button Clicked","userId":"97980cfea0067"}`),
		chromedp.Click(chromedp.ID("explain-run")),
		chromedp.WaitVisible(chromedp.ID("explain-result")),
	))
	explainStatus := text("#explain-status")
	explainCalls := text("#explain-calls")
	explainFacts := text("#explain-facts")
	if !strings.Contains(listed, "browser-msg-1") || strings.Contains(listed, "browser-msg-other") {
		t.Errorf("listing shows %q: want this account's event and not the other's", listed)
	}
	if strings.Contains(href, s.key) || stored != s.key || cookies != "0" {
		t.Errorf("key handling: url %q, sessionStorage %q, cookie+localStorage %q; want the key in sessionStorage only", href, stored, cookies)
	}
	if detailStatus != "delivered" {
		t.Errorf("journey status = %q, want delivered", detailStatus)
	}
	for _, want := range []string{"GET", "/user", "/usage", "200"} {
		if !strings.Contains(calls, want) {
			t.Errorf("journey calls %q lack %q", calls, want)
		}
	}
	if !strings.Contains(trace, `bin/tracetree -message "browser-msg-1"`) {
		t.Errorf("trace line = %q, want the local tracetree command", trace)
	}
	if explainStatus != "would_deliver" {
		t.Errorf("explain status = %q, want would_deliver", explainStatus)
	}
	for _, want := range []string{"GET /user", "POST /user", "POST /usage", "97980cfea0067"} {
		if !strings.Contains(explainCalls+explainFacts, want) {
			t.Errorf("explain shows %q %q, lacking %q", explainCalls, explainFacts, want)
		}
	}
}
