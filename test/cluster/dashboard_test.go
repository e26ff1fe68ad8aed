package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
)

// browserTimeout bounds one browser step (a page drawn, a poll).
const browserTimeout = 30 * time.Second

// newBrowser starts Debian's headless chromium for the test and returns a tab.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("the dashboard tests need Debian's chromium (make test-deps installs it): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 900), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// step runs browser actions with a deadline, failing the test with what.
func step(ctx context.Context, t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, browserTimeout)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// waitFor polls a JavaScript predicate in the page until it is true. Evaluation
// errors (the page navigating away meanwhile) count as false until the deadline.
func waitFor(ctx context.Context, t *testing.T, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(browserTimeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for time.Now().Before(deadline) {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ok, err := chromedp.Run(sctx, chromedp.Evaluate[bool]("Boolean("+expr+")"))
		cancel()
		if err == nil && ok {
			return
		}
		lastErr = err
		<-tick.C
	}
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 2000) : ""`))
	t.Fatalf("%s: not within %v (last error: %v)\npage text:\n%s", what, browserTimeout, lastErr, text)
}

// clickWhenPresent clicks the element in the page's own script, in one step
// from finding it: a table that a search re-renders meanwhile cannot take the
// node away between the lookup and the click, as it can with chromedp.Click.
func clickWhenPresent(ctx context.Context, t *testing.T, what, selector string) {
	t.Helper()
	waitFor(ctx, t, what, fmt.Sprintf(`(() => { const e = document.querySelector(%q); if (!e) return false; e.click(); return true })()`, selector))
}

func evalString(ctx context.Context, t *testing.T, expr string) string {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, browserTimeout)
	defer cancel()
	s, err := chromedp.Run(sctx, chromedp.Evaluate[string](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return s
}

// screenshot saves the page as DASHBOARD_SCREENSHOTS/name (default: the test's
// temporary directory) and logs where.
func screenshot(ctx context.Context, t *testing.T, name string) {
	t.Helper()
	dir := os.Getenv("DASHBOARD_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	sctx, cancel := context.WithTimeout(ctx, browserTimeout)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// login fills the login form.
func login(ctx context.Context, t *testing.T, base, user, password string) {
	t.Helper()
	step(ctx, t, "log in as "+user,
		chromedp.Navigate(base+"/login"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS("#username"), user),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("#login-button")),
	)
}

// metric returns the value of a metric line (name with labels) in the node's /metrics.
func (n *node) metric(line string) (float64, error) {
	resp, err := httpClient.Get("http://" + n.apiAddress() + "/metrics")
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, line+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("%s not in /metrics", line)
}

// TestDashboard drives the dashboard of a three-node cluster in a real headless
// chromium: a wrong password refused, the default login (with its banner), the three
// nodes, the message-rate chart moving while a publisher runs, a client connected to
// another node found and kicked (it gets DISCONNECT 0x98), a retained message deleted
// (gone from every node), a message published from the tool received by a real
// client, and a login with credentials from files (a Secret), without the banner.
// Screenshots of the overview and the clients page are saved (docs/images holds them).
func TestDashboard(t *testing.T) {
	dir := t.TempDir()
	userFile, passFile := filepath.Join(dir, "username"), filepath.Join(dir, "password")
	if err := os.WriteFile(userFile, []byte("operator\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(passFile, []byte("s3cret-Pa55word\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	nodes := make([]*node, 3)
	nodes[0] = startNode(t, nodeOptions{name: nodeName(0), dashboard: true})
	nodes[1] = startNode(t, nodeOptions{name: nodeName(1), dashboard: true,
		extra: []string{"--dashboard.username-file", userFile, "--dashboard.password-file", passFile}})
	nodes[2] = startNode(t, nodeOptions{name: nodeName(2)})
	nodes[0].bootstrap()
	nodes[1].join(nodes[0])
	waitClusterSize(t, nodes[:2], 2)
	nodes[2].join(nodes[0])
	waitClusterSize(t, nodes, 3)
	base := "http://" + nodes[0].dashboardAddress()

	// Without a session: the login page; the API refuses.
	resp, err := httpClient.Get(base + "/api/v1/clients")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the dashboard's API without a session: %d", resp.StatusCode)
	}

	ctx := newBrowser(t)
	login(ctx, t, base, "admin", "wrong")
	waitFor(ctx, t, "wrong password refused", `document.querySelector("#login-error") && document.querySelector("#login-error").innerText.includes("Wrong")`)
	if v, err := nodes[0].metric(`mqttd_dashboard_logins_total{result="failed"}`); err != nil || v != 1 {
		t.Fatalf("failed logins counted: %v %v", v, err)
	}

	login(ctx, t, base, "admin", "public")
	waitFor(ctx, t, "the three nodes on the overview", `document.querySelectorAll("#nodes tbody tr[data-node]").length === 3`)
	for i := range 3 {
		waitFor(ctx, t, "node "+nodeName(i)+" ready", fmt.Sprintf(`(document.querySelector('#nodes tr[data-node="%s"]')||{}).innerText.includes("ready")`, nodeName(i)))
	}
	if banner := evalString(ctx, t, `(document.querySelector("#default-banner")||{innerText:""}).innerText`); !strings.Contains(banner, "default credentials") {
		t.Fatalf("no default-credentials banner: %q", banner)
	}

	// A publisher on node-1 and a subscriber on node-2: the chart's inbound rate rises.
	sub := connectV5(t, nodes[2], "chart-sub", v5Options{cleanStart: true})
	sub.subscribe(t, 0, "load/#")
	pub := connectV5(t, nodes[1], "chart-pub", v5Options{cleanStart: true})
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for !stop.Load() {
			<-tick.C
			if pub.tryPublish("load/x", 0, false, "tick") != nil {
				return
			}
		}
	}()
	waitFor(ctx, t, "the message-rate chart moves", `Number(document.querySelector("#rate-chart").dataset.lastIn) > 10 && Number(document.querySelector("#rate-chart").dataset.samples) >= 6`)
	screenshot(ctx, t, "dashboard-overview.png")
	stop.Store(true)
	<-done

	// Clients: find the client on node-2 and kick it from node-0's dashboard.
	victim := connectV5(t, nodes[2], "dash-victim", v5Options{cleanStart: true})
	step(ctx, t, "search the clients",
		chromedp.Navigate(base+"/#clients"),
		chromedp.WaitVisible(chromedp.CSS("#clients-search")),
		chromedp.SendKeys(chromedp.CSS("#clients-search"), "dash-"),
		chromedp.Evaluate[chromedp.Void](`document.querySelector("#clients-filter").requestSubmit()`),
	)
	waitFor(ctx, t, "dash-victim listed on node-2", `(document.querySelector('#clients tr[data-client="dash-victim"]')||{innerText:""}).innerText.includes("node-2")`)
	step(ctx, t, "show all clients", chromedp.Evaluate[chromedp.Void](`document.querySelector("#clients-search").value = ""; document.querySelector("#clients-filter").requestSubmit()`))
	waitFor(ctx, t, "all clients listed", `document.querySelectorAll('#clients tr[data-client]').length >= 3`)
	screenshot(ctx, t, "dashboard-clients.png")
	step(ctx, t, "confirm without asking", chromedp.Evaluate[chromedp.Void](`window.confirm = () => true`))
	clickWhenPresent(ctx, t, "kick dash-victim", `#clients tr[data-client="dash-victim"] button.kick`)
	select {
	case d := <-victim.serverDisconnect:
		if d.ReasonCode != 0x98 {
			t.Fatalf("kicked with 0x%02x, want 0x98", d.ReasonCode)
		}
	case <-time.After(clusterTimeout):
		t.Fatal("dash-victim got no DISCONNECT")
	}
	// The kick is asynchronous: search again until the page no longer lists it.
	waitFor(ctx, t, "dash-victim gone from the page", `(document.querySelector("#clients-filter").requestSubmit(), !document.querySelector('#clients tr[data-client="dash-victim"]'))`)

	// Retained: delete one from the page; it is gone from every node.
	pub.publish(t, "dash/retained", true, "keep me")
	step(ctx, t, "open the retained messages", chromedp.Navigate(base+"/#retained"))
	// node-0 may apply the replicated message a moment after the publisher's node:
	// search again until it is listed.
	waitFor(ctx, t, "the retained message listed", `(document.querySelector("#retained-filter").requestSubmit(), (document.querySelector('#retained tr[data-topic="dash/retained"]')||{innerText:""}).innerText.includes("keep me"))`)
	step(ctx, t, "confirm without asking", chromedp.Evaluate[chromedp.Void](`window.confirm = () => true`))
	clickWhenPresent(ctx, t, "delete it", `#retained tr[data-topic="dash/retained"] button.delete`)
	waitFor(ctx, t, "the retained message gone from the page", `(document.querySelector("#retained-filter").requestSubmit(), !document.querySelector('#retained tr[data-topic="dash/retained"]'))`)
	eventually(t, clusterTimeout, "the retained message gone from every node", func() error {
		for _, n := range nodes {
			if status, _, err := n.call(http.MethodGet, "/api/v1/retained/message?topic=dash/retained", nil, true); err != nil || status != http.StatusNotFound {
				return fmt.Errorf("%s: %d %w", n.name(), status, err)
			}
		}
		return nil
	})

	// The publish tool: a real client on node-2 receives the message.
	rec := connectV5(t, nodes[2], "tool-sub", v5Options{cleanStart: true})
	rec.subscribe(t, 1, "tool/test")
	eventually(t, clusterTimeout, "node-0 routes tool/test to node-2", func() error {
		var rl apiv1.RouteList
		if err := nodes[0].getJSON("/api/v1/routes?topic=tool/test", &rl); err != nil {
			return err
		}
		if len(rl.Data) != 1 || !slices.Contains(rl.Data[0].Nodes, "node-2") {
			return fmt.Errorf("routes %+v", rl.Data)
		}
		return nil
	})
	// The subscribe tool watches tool/# on node-0; its route reaches the other nodes.
	step(ctx, t, "subscribe from the tool",
		chromedp.Navigate(base+"/#publish"),
		chromedp.WaitVisible(chromedp.CSS("#watch-topic")),
		chromedp.SendKeys(chromedp.CSS("#watch-topic"), "tool/#"),
		chromedp.Click(chromedp.CSS("#watch-button")),
	)
	waitFor(ctx, t, "the tool subscribed", `document.querySelector("#watch-state").innerText.includes("Subscribed to tool/#")`)
	eventually(t, clusterTimeout, "node-2 routes tool/# to node-0", func() error {
		var rl apiv1.RouteList
		if err := nodes[2].getJSON("/api/v1/routes?topic="+url.QueryEscape("tool/#"), &rl); err != nil {
			return err
		}
		if len(rl.Data) != 1 || !slices.Contains(rl.Data[0].Nodes, "node-0") {
			return fmt.Errorf("routes %+v", rl.Data)
		}
		return nil
	})
	rec.publish(t, "tool/from-node-2", false, "published on node-2")
	waitFor(ctx, t, "the tool shows a message published on another node",
		`(document.querySelector('#watch-messages li[data-topic="tool/from-node-2"]')||{innerText:""}).innerText.includes("published on node-2")`)
	step(ctx, t, "publish from the tool",
		chromedp.SendKeys(chromedp.CSS("#publish-topic"), "tool/test"),
		chromedp.SendKeys(chromedp.CSS("#publish-payload"), "hello from the dashboard"),
		chromedp.Click(chromedp.CSS("#publish-button")),
	)
	waitFor(ctx, t, "the tool reports the delivery", `document.querySelector("#publish-result").innerText.includes("2 subscriber(s)")`) // tool-sub and the tool's own subscription
	waitFor(ctx, t, "the tool's own subscription shows its message",
		`(document.querySelector('#watch-messages li[data-topic="tool/test"]')||{innerText:""}).innerText.includes("hello from the dashboard")`)
	screenshot(ctx, t, "dashboard-tools.png")
	eventually(t, clusterTimeout, "the client receives the tool's message", func() error {
		if !rec.rec.hasPayload("hello from the dashboard") {
			return fmt.Errorf("not yet: %v", rec.rec.all())
		}
		return nil
	})

	// node-1's dashboard: credentials from files; the defaults refused; no banner.
	base1 := "http://" + nodes[1].dashboardAddress()
	login(ctx, t, base1, "admin", "public")
	waitFor(ctx, t, "the defaults refused where credentials are set", `document.querySelector("#login-error") !== null`)
	login(ctx, t, base1, "operator", "s3cret-Pa55word")
	waitFor(ctx, t, "node-1's dashboard shows the three nodes", `document.querySelectorAll("#nodes tbody tr[data-node]").length === 3`)
	if n := evalString(ctx, t, `String(document.querySelectorAll("#default-banner").length)`); n != "0" {
		t.Fatalf("the default-credentials banner shows with credentials set")
	}
}
