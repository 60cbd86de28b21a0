package linetail

import (
	"slices"
	"strings"
	"testing"
)

func TestRing(t *testing.T) {
	tests := []struct {
		name   string
		n      int
		writes []string
		want   []string
	}{
		{"empty", 3, nil, []string{}},
		{"fewer than n", 3, []string{"a\nb\n"}, []string{"a", "b"}},
		{"keeps last n", 3, []string{"1\n2\n3\n4\n5\n"}, []string{"3", "4", "5"}},
		{"split across writes", 3, []string{"hel", "lo\nwor", "ld\n"}, []string{"hello", "world"}},
		{"unfinished last line", 2, []string{"a\nb\nc"}, []string{"b", "c"}},
		{"crlf", 3, []string{"a\r\nb\r\n"}, []string{"a", "b"}},
		{"wraps many times", 2, []string{strings.Repeat("x\n", 7) + "y\nz\n"}, []string{"y", "z"}},
		{"empty lines kept", 3, []string{"a\n\nb\n"}, []string{"a", "", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(tt.n)
			for _, w := range tt.writes {
				if n, err := r.Write([]byte(w)); err != nil || n != len(w) {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if got := r.Lines(); !slices.Equal(got, tt.want) {
				t.Errorf("Lines() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRingCapsLongLines(t *testing.T) {
	r := New(2)
	r.Write([]byte(strings.Repeat("x", 3*maxLineBytes)))
	r.Write([]byte(strings.Repeat("y", 10) + "\n"))
	got := r.Lines()
	if len(got) != 1 || len(got[0]) != maxLineBytes {
		t.Fatalf("got %d lines, first %d bytes; want 1 line of %d", len(got), len(got[0]), maxLineBytes)
	}
}

func TestRingSkipBlank(t *testing.T) {
	r := New(3)
	r.SkipBlank = true
	r.Write([]byte("one\n\ntwo\nthr"))
	r.Write([]byte("ee\nfour"))
	if got := r.Lines(); !slices.Equal(got, []string{"two", "three", "four"}) {
		t.Fatalf("Lines = %q", got)
	}
}

func TestOneLine(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"one", "one"},
		{"  padded \t", "padded"},
		{"boom\n  at line 3\n", "boom; at line 3"},
		{"\n\na\n\n b \n", "a; b"},
		{"a\r\nb", "a; b"},
	}
	for _, tt := range tests {
		if got := OneLine(tt.in); got != tt.want {
			t.Errorf("OneLine(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
