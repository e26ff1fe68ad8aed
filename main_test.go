package main

import (
	"slices"
	"testing"
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
