package api

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mqtt-operator/mqtt-operator/broker/auth"
)

var (
	authConnectsDesc = prometheus.NewDesc("mqttd_auth_connects_total",
		"CONNECTs by authentication result: ok, bad_credentials (unknown user or wrong password), anonymous_refused, client_id_owned (another user's client ID), busy (no bcrypt slot within the connect timeout).",
		[]string{"result"}, nil)
	authDeniedDesc = prometheus.NewDesc("mqttd_auth_denied_total",
		"Operations the ACL refused, by action: publish, subscribe, will.", []string{"action"}, nil)
	authReloadsDesc = prometheus.NewDesc("mqttd_auth_reloads_total",
		"Reloads of the users and ACL files by result: ok (new rules in force), error (a file did not read or parse; the old rules stay).",
		[]string{"result"}, nil)
	authRevokedDesc = prometheus.NewDesc("mqttd_auth_subscriptions_revoked_total",
		"Existing subscriptions removed because reloaded rules no longer allow them.", nil, nil)
	authUsersDesc = prometheus.NewDesc("mqttd_auth_users", "Users in the users file in force.", nil, nil)
	authRulesDesc = prometheus.NewDesc("mqttd_auth_acl_rules", "ACL rules in force.", nil, nil)
)

// authCollector reports the authenticator's counters.
type authCollector struct{ a *auth.Authenticator }

// Describe implements prometheus.Collector.
func (c authCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{authConnectsDesc, authDeniedDesc, authReloadsDesc, authRevokedDesc, authUsersDesc, authRulesDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c authCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.a.Stats()
	for result, n := range s.Connects {
		ch <- prometheus.MustNewConstMetric(authConnectsDesc, prometheus.CounterValue, float64(n), result)
	}
	for action, n := range s.Denied {
		ch <- prometheus.MustNewConstMetric(authDeniedDesc, prometheus.CounterValue, float64(n), action)
	}
	ch <- prometheus.MustNewConstMetric(authReloadsDesc, prometheus.CounterValue, float64(s.Reloads), "ok")
	ch <- prometheus.MustNewConstMetric(authReloadsDesc, prometheus.CounterValue, float64(s.ReloadErrors), "error")
	ch <- prometheus.MustNewConstMetric(authRevokedDesc, prometheus.CounterValue, float64(s.RevokedSubscriptions))
	ch <- prometheus.MustNewConstMetric(authUsersDesc, prometheus.GaugeValue, float64(s.Users))
	ch <- prometheus.MustNewConstMetric(authRulesDesc, prometheus.GaugeValue, float64(s.Rules))
}

var dashboardLoginsDesc = prometheus.NewDesc("mqttd_dashboard_logins_total",
	"Dashboard logins by result: ok, failed (wrong username or password), throttled (too many attempts from one address).",
	[]string{"result"}, nil)

// dashboardCollector reports the dashboard's logins.
type dashboardCollector struct{ d LoginCounter }

// Describe implements prometheus.Collector.
func (c dashboardCollector) Describe(ch chan<- *prometheus.Desc) { ch <- dashboardLoginsDesc }

// Collect implements prometheus.Collector.
func (c dashboardCollector) Collect(ch chan<- prometheus.Metric) {
	ok, failed, throttled := c.d.Logins()
	ch <- prometheus.MustNewConstMetric(dashboardLoginsDesc, prometheus.CounterValue, float64(ok), "ok")
	ch <- prometheus.MustNewConstMetric(dashboardLoginsDesc, prometheus.CounterValue, float64(failed), "failed")
	ch <- prometheus.MustNewConstMetric(dashboardLoginsDesc, prometheus.CounterValue, float64(throttled), "throttled")
}
