package config

import (
	"testing"

	"gopkg.in/yaml.v3"
)

func TestMaxBatch(t *testing.T) {
	tests := []struct {
		name    string
		backend string
		want    int
	}{
		{"no backend section", "", DefaultMaxBatch},
		{"set", "max_batch: 3\ndevice: cpu\n", 3},
		{"unset", "device: cpu\n", DefaultMaxBatch},
		{"zero is the backend's error, not ours", "max_batch: 0\n", DefaultMaxBatch},
		{"not a number", "max_batch: many\n", DefaultMaxBatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			if tt.backend != "" {
				var doc yaml.Node
				if err := yaml.Unmarshal([]byte(tt.backend), &doc); err != nil {
					t.Fatal(err)
				}
				c.Backend = *doc.Content[0]
			}
			if got := c.MaxBatch(); got != tt.want {
				t.Errorf("MaxBatch() = %d, want %d", got, tt.want)
			}
		})
	}
}
