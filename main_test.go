package main

import (
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/labels"
)

func TestSplitNamespaces(t *testing.T) {
	cases := []struct {
		flag string
		want []string
	}{
		{"", nil},
		{" , ", nil},
		{"team-a", []string{"team-a"}},
		{"team-a,team-b", []string{"team-a", "team-b"}},
		{" team-a , team-b,,team-a ", []string{"team-a", "team-b"}},
	}
	for _, tc := range cases {
		if got := splitNamespaces(tc.flag); !slices.Equal(got, tc.want) {
			t.Errorf("splitNamespaces(%q) = %q, want %q", tc.flag, got, tc.want)
		}
	}
}

func TestOperatorPodLabels(t *testing.T) {
	for _, tc := range []struct {
		flag    string
		want    string
		wantErr bool
	}{
		{"", "", true},
		{" ", "", true},
		{"app.kubernetes.io/name=mqtt-operator", "app.kubernetes.io/name=mqtt-operator", false},
		{"a=b,c=d", "a=b,c=d", false},
		{"a", "", true},
	} {
		got, err := operatorPodLabels(tc.flag)
		if (err != nil) != tc.wantErr || labels.FormatLabels(got) != tc.want && !tc.wantErr {
			t.Errorf("operatorPodLabels(%q) = %v, %v; want %q, error %v", tc.flag, got, err, tc.want, tc.wantErr)
		}
	}
}
