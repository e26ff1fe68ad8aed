// Command promcheck checks the monitoring the project ships with Prometheus's own
// packages, as promtool would: the alert rules the operator renders into each
// PrometheusRule (controllers/resource/monitoring/rules.yaml, its template filled in
// with a sample cluster) must parse as a rule file, with every expression valid
// PromQL; every query of the Grafana dashboards (charts/mqtt-operator/dashboards)
// must be valid PromQL once the dashboard variables are replaced. It is its own module
// so that the Prometheus server's dependencies stay out of the project's go.mod.
//
//	go run . RULES.yaml DASHBOARD.json...
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"text/template"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// promql parses PromQL as Prometheus does.
var promql = parser.NewParser(parser.Options{})

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: promcheck RULES.yaml [DASHBOARD.json...]")
		os.Exit(2)
	}
	failed := false
	n, err := checkRules(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[1], err)
		failed = true
	} else {
		fmt.Printf("%s: %d rules, every expression parses\n", os.Args[1], n)
	}
	for _, f := range os.Args[2:] {
		n, err := checkDashboard(f)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", f, err)
			failed = true
			continue
		}
		fmt.Printf("%s: %d queries, every one parses\n", f, n)
	}
	if failed {
		os.Exit(1)
	}
}

// checkRules renders the rules template for a sample cluster and parses the result
// as a Prometheus rule file (groups, rules, durations, labels, annotation templates)
// and every expression as PromQL.
func checkRules(path string) (int, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	tmpl, err := template.New("rules").Parse(string(raw))
	if err != nil {
		return 0, err
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, map[string]string{"Namespace": "mqtt", "Name": "prod",
		"Selector": `namespace="mqtt",mqttcluster="prod"`}); err != nil {
		return 0, err
	}
	groups, errs := rulefmt.Parse(buf.Bytes(), false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		return 0, fmt.Errorf("%v", errs)
	}
	n := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if _, err := promql.ParseExpr(r.Expr); err != nil {
				return 0, fmt.Errorf("rule %s: %w", r.Alert, err)
			}
			n++
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("no rules")
	}
	return n, nil
}

// checkDashboard parses every target expression of a Grafana dashboard.
func checkDashboard(path string) (int, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var dash struct {
		Title  string  `json:"title"`
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		return 0, err
	}
	if dash.Title == "" || len(dash.Panels) == 0 {
		return 0, fmt.Errorf("no title or no panels")
	}
	vars := strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1m", "${namespace}", "mqtt", "$namespace", "mqtt",
		"${cluster}", "prod", "$cluster", "prod", "${pod}", "prod-0", "$pod", "prod-0")
	n := 0
	var walk func([]panel) error
	walk = func(ps []panel) error {
		for _, p := range ps {
			for _, t := range p.Targets {
				if _, err := promql.ParseExpr(vars.Replace(t.Expr)); err != nil {
					return fmt.Errorf("panel %q: %q: %w", p.Title, t.Expr, err)
				}
				n++
			}
			if err := walk(p.Panels); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(dash.Panels); err != nil {
		return 0, err
	}
	return n, nil
}

type panel struct {
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}
