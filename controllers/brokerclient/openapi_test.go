package brokerclient

import (
	"os"
	"regexp"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
)

// TestPathsInOpenAPI checks the operator's client against the API's contract: every
// /api/v1 path it calls is in broker/apiv1/openapi.yaml (its bodies are apiv1's
// types, which broker/api's TestOpenAPIMatchesHandlers checks against the document).
func TestPathsInOpenAPI(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := yaml.Unmarshal(apiv1.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("client.go")
	if err != nil {
		t.Fatal(err)
	}
	calls := regexp.MustCompile(`http\.Method(Get|Post|Delete), "(/api/v1/[^"?]+)"`).FindAllStringSubmatch(string(src), -1)
	if len(calls) < 5 {
		t.Fatalf("found only %d calls in client.go: the pattern no longer matches the code", len(calls))
	}
	for _, c := range calls {
		method := map[string]string{"Get": "get", "Post": "post", "Delete": "delete"}[c[1]]
		if _, ok := doc.Paths[c[2]][method]; !ok {
			t.Errorf("the operator calls %s %s, which openapi.yaml does not define", c[1], c[2])
		}
	}
}
