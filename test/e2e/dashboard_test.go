//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
)

var csrfRE = regexp.MustCompile(`name="csrf-token" content="([^"]+)"`)

var _ = Describe("The dashboard on a real cluster", Ordered, func() {
	It("serves the login page through a port-forward to its Service, and its API lists the three nodes", func() {
		ns := newNamespace("dash")
		run(kubectlBin, "create", "secret", "generic", "-n", ns, "dash-admin", "--from-literal=username=ops", "--from-literal=password=e2e-dashboard-pass")
		out, err := kubectlApply(clusterManifest(ns, "dash", 3, "  dashboard:\n    enabled: true\n    adminSecretRef:\n      name: dash-admin\n"))
		Expect(err).NotTo(HaveOccurred(), out)
		run(kubectlBin, "wait", "-n", ns, "mqc/dash", "--for=condition=Ready", "--timeout=5m")
		Expect(run(kubectlBin, "get", "-n", ns, "mqc", "dash")).To(MatchRegexp(`dash\s+True\s+3/3\s+AsExpected`))

		base := "http://" + portForward(ns, "svc/dash-dashboard", 18083)
		jar, err := cookiejar.New(nil)
		Expect(err).NotTo(HaveOccurred())
		hc := &http.Client{Jar: jar, Timeout: 30 * time.Second}
		get := func(path string) (int, string) {
			resp, err := hc.Get(base + path)
			Expect(err).NotTo(HaveOccurred())
			defer func() { _ = resp.Body.Close() }()
			b, err := io.ReadAll(resp.Body)
			Expect(err).NotTo(HaveOccurred())
			return resp.StatusCode, string(b)
		}
		code, page := get("/login")
		Expect(code).To(Equal(http.StatusOK))
		Expect(page).To(ContainSubstring(`id="login-form"`))
		Expect(page).NotTo(ContainSubstring("default credentials"), "the admin Secret's credentials are in force")
		if code, _ := get("/api/v1/nodes"); code != http.StatusUnauthorized {
			Fail(fmt.Sprintf("the dashboard's API without a session: %d", code))
		}

		login := func(user, password string) int {
			resp, err := hc.PostForm(base+"/login", url.Values{"username": {user}, "password": {password}})
			Expect(err).NotTo(HaveOccurred())
			_ = resp.Body.Close()
			return resp.StatusCode
		}
		Expect(login("admin", "public")).To(Equal(http.StatusUnauthorized), "the default credentials with a Secret set")
		Expect(login("ops", "e2e-dashboard-pass")).To(Equal(http.StatusOK), "the Secret's credentials (redirected to the overview)")
		code, page = get("/")
		Expect(code).To(Equal(http.StatusOK))
		Expect(csrfRE.FindStringSubmatch(page)).To(HaveLen(2), "the overview carries its CSRF token")

		// The Service picks any pod; every pod accepts the session and answers for all.
		Eventually(func(g Gomega) {
			code, body := get("/api/v1/nodes")
			g.Expect(code).To(Equal(http.StatusOK), body)
			var nl apiv1.NodeList
			g.Expect(json.Unmarshal([]byte(body), &nl)).To(Succeed())
			var names []string
			for _, n := range nl.Data {
				g.Expect(n.Ready).To(BeTrue(), "%s ready", n.Name)
				names = append(names, n.Name)
			}
			g.Expect(names).To(Equal([]string{"dash-0", "dash-1", "dash-2"}))
			g.Expect(nl.Unreachable).To(BeEmpty())
			g.Expect(nl.ClusterID).To(Equal(run(kubectlBin, "get", "-n", ns, "mqc", "dash", "-o", "jsonpath={.status.clusterID}")))
		}).WithTimeout(time.Minute).WithPolling(2 * time.Second).Should(Succeed())
		code, body := get("/api/v1/stats")
		Expect(code).To(Equal(http.StatusOK), body)
		Expect(strings.Count(body, `"name":"dash-`)).To(Equal(3), "stats of every node: %s", body)
	})
})
