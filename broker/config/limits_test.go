package config

import (
	"strings"
	"testing"
)

// TestAbuseLimitDefaults: every abuse limit is on by default, and settable.
func TestAbuseLimitDefaults(t *testing.T) {
	l := Default().Limits
	for name, v := range map[string]int{
		"max_connections": l.MaxConnections, "connection_rate": l.ConnectionRate, "connection_burst": l.ConnectionBurst,
		"max_queued_bytes": l.MaxQueuedBytes, "max_retained_messages": l.MaxRetained, "max_retained_bytes": l.MaxRetainedBytes,
		"max_subscriptions": l.MaxSubscriptions, "max_topic_length": l.MaxTopicLength, "max_topic_levels": l.MaxTopicLevels,
		"publish_rate": l.PublishRate, "publish_byte_rate": l.PublishByteRate, "max_session_expiry": int(l.MaxSessionExpiry),
	} {
		if v <= 0 {
			t.Errorf("limits.%s is off by default", name)
		}
	}
	c := Default()
	if err := c.Set("limits.publish_rate", "0"); err != nil || c.Limits.PublishRate != 0 {
		t.Errorf("limits.publish_rate=0: %v, %d", err, c.Limits.PublishRate)
	}
	if err := c.Set("limits.connection_burst", "0"); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "limits.connection_burst") {
		t.Errorf("connection_burst 0 with a connection_rate: %v, want an error naming it", err)
	}
}
