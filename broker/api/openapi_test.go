package api_test

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/mqtt-operator/mqtt-operator/broker/api"
	"github.com/mqtt-operator/mqtt-operator/broker/apiv1"
)

type openAPIDoc struct {
	Paths      map[string]map[string]any `yaml:"paths"`
	Components struct {
		Schemas map[string]schema `yaml:"schemas"`
	} `yaml:"components"`
}

type schema struct {
	Ref        string            `yaml:"$ref"`
	Type       string            `yaml:"type"`
	Properties map[string]schema `yaml:"properties"`
	Items      *schema           `yaml:"items"`
}

type operation struct {
	RequestBody *struct {
		Content map[string]struct {
			Schema schema `yaml:"schema"`
		} `yaml:"content"`
	} `yaml:"requestBody"`
	Responses map[string]struct {
		Content map[string]struct {
			Schema schema `yaml:"schema"`
		} `yaml:"content"`
	} `yaml:"responses"`
}

// TestOpenAPIMatchesHandlers checks apiv1/openapi.yaml against the server's route
// table (api.Routes: every registered endpoint) and the Go types its handlers encode
// and decode: the same endpoints, the same success status, the request and answer
// bodies naming the Go type's schema, and every schema listing exactly the JSON
// fields of its Go type with matching kinds. A handler or type changed without the
// document (or the reverse) fails here.
func TestOpenAPIMatchesHandlers(t *testing.T) {
	var doc openAPIDoc
	if err := yaml.Unmarshal(apiv1.OpenAPI, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	seen := map[string]bool{}
	checked := map[string]bool{}
	for _, rt := range api.Routes() {
		path := strings.ReplaceAll(rt.Path, "...}", "}")
		key := rt.Method + " " + path
		seen[key] = true
		raw, ok := doc.Paths[path][strings.ToLower(rt.Method)]
		if !ok {
			t.Errorf("%s is served but not in openapi.yaml", key)
			continue
		}
		var op operation
		b, _ := yaml.Marshal(raw)
		if err := yaml.Unmarshal(b, &op); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		resp, ok := op.Responses[strconv.Itoa(rt.Status)]
		if !ok {
			t.Errorf("%s answers %d, openapi.yaml lists %v", key, rt.Status, keysOf(op.Responses))
			continue
		}
		if rt.Response != nil {
			checkBody(t, &doc, key+" answer", resp.Content["application/json"].Schema, reflect.TypeOf(rt.Response), checked)
		} else if len(resp.Content) > 0 && rt.Path != "/api/v1/openapi.json" {
			t.Errorf("%s: openapi.yaml gives an answer body, the handler none", key)
		}
		switch {
		case rt.Request != nil && op.RequestBody == nil:
			t.Errorf("%s reads a %T, openapi.yaml has no request body", key, rt.Request)
		case rt.Request != nil:
			checkBody(t, &doc, key+" request", op.RequestBody.Content["application/json"].Schema, reflect.TypeOf(rt.Request), checked)
		case op.RequestBody != nil:
			t.Errorf("%s: openapi.yaml has a request body, the handler reads none", key)
		}
	}
	for path, ops := range doc.Paths {
		for method := range ops {
			if method == "parameters" {
				continue
			}
			if key := strings.ToUpper(method) + " " + path; !seen[key] {
				t.Errorf("openapi.yaml lists %s, which the server does not serve", key)
			}
		}
	}
	for name := range doc.Components.Schemas {
		if !checked[name] && name != "Error" {
			t.Errorf("schema %s is not the body of any endpoint", name)
		}
	}
	checkSchema(t, &doc, "Error", doc.Components.Schemas["Error"], reflect.TypeOf(apiv1.Error{}), checked)
}

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// checkBody checks that s refers to the schema named after Go type typ, and that
// schema.
func checkBody(t *testing.T, doc *openAPIDoc, what string, s schema, typ reflect.Type, checked map[string]bool) {
	t.Helper()
	name, ok := strings.CutPrefix(s.Ref, "#/components/schemas/")
	if !ok || name != typ.Name() {
		t.Errorf("%s: openapi.yaml has %q, the handler uses apiv1.%s", what, s.Ref, typ.Name())
		return
	}
	checkSchema(t, doc, name, doc.Components.Schemas[name], typ, checked)
}

// jsonFields returns the JSON fields of a struct type, embedded structs flattened.
func jsonFields(typ reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			for k, v := range jsonFields(f.Type) {
				out[k] = v
			}
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// checkSchema compares schema name with Go type typ, field by field, recursively.
func checkSchema(t *testing.T, doc *openAPIDoc, name string, s schema, typ reflect.Type, checked map[string]bool) {
	t.Helper()
	if checked[name] {
		return
	}
	checked[name] = true
	fields := jsonFields(typ)
	for f, ft := range fields {
		ps, ok := s.Properties[f]
		if !ok {
			t.Errorf("schema %s lacks %s.%s (json %q)", name, typ.Name(), f, f)
			continue
		}
		if err := checkKind(t, doc, ps, ft, checked); err != nil {
			t.Errorf("schema %s, property %s: %v", name, f, err)
		}
	}
	for p := range s.Properties {
		if _, ok := fields[p]; !ok {
			t.Errorf("schema %s has %s, which apiv1.%s does not", name, p, typ.Name())
		}
	}
}

func checkKind(t *testing.T, doc *openAPIDoc, s schema, typ reflect.Type, checked map[string]bool) error {
	if typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if s.Ref != "" {
		name := strings.TrimPrefix(s.Ref, "#/components/schemas/")
		if typ.Kind() != reflect.Struct || typ.Name() != name {
			return fmt.Errorf("%s, the Go type is %s", s.Ref, typ)
		}
		checkSchema(t, doc, name, doc.Components.Schemas[name], typ, checked)
		return nil
	}
	want := map[reflect.Kind]string{reflect.String: "string", reflect.Bool: "boolean", reflect.Int: "integer",
		reflect.Int64: "integer", reflect.Uint8: "integer", reflect.Uint32: "integer", reflect.Uint64: "integer",
		reflect.Slice: "array", reflect.Struct: "object"}[typ.Kind()]
	if s.Type != want {
		return fmt.Errorf("type %q, the Go type %s is %q", s.Type, typ, want)
	}
	if typ.Kind() == reflect.Slice {
		if s.Items == nil {
			return fmt.Errorf("an array without items")
		}
		return checkKind(t, doc, *s.Items, typ.Elem(), checked)
	}
	return nil
}
