package checks

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzEscape checks that escaped text stays one inert line of Markdown, and that a cut
// summary stays within its limit, valid UTF-8 and with its code blocks closed.
func FuzzEscape(f *testing.F) {
	for _, s := range []string{"a|b", "@admin", "<img src=x>", "```\ncode", "&amp;", "x\\|y", "é\u200b#1", "$$"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Escape(s)
		if strings.ContainsAny(got, "\n\r<>") {
			t.Fatalf("Escape(%q) = %q: has a line break or an angle bracket", s, got)
		}
		for i := 0; i < len(got); i++ {
			switch c := got[i]; {
			case c == '\\':
				i++ // an escaped character
			case strings.IndexByte("|`*_[]~$", c) >= 0:
				t.Fatalf("Escape(%q) = %q: unescaped %q at %d", s, got, c, i)
			case c == '@' || c == '#':
				if !strings.HasPrefix(got[i+1:], "\u200b") {
					t.Fatalf("Escape(%q) = %q: %q at %d can mention or reference", s, got, c, i)
				}
			case c == '&':
				if !strings.HasPrefix(got[i:], "&amp;") && !strings.HasPrefix(got[i:], "&lt;") && !strings.HasPrefix(got[i:], "&gt;") {
					t.Fatalf("Escape(%q) = %q: a raw & at %d", s, got, i)
				}
			}
		}
		const limit = 120
		cut := capMarkdown(s, limit, details)
		if len(cut) > max(limit, len(s)) || (len(s) > limit && len(cut) > limit) {
			t.Fatalf("capMarkdown kept %d bytes of %d, limit %d", len(cut), len(s), limit)
		}
		if utf8.ValidString(s) && !utf8.ValidString(cut) {
			t.Fatalf("capMarkdown(%q) cut a character: %q", s, cut)
		}
		if len(s) > limit && strings.Count(cut, "```")%2 != 0 {
			t.Fatalf("capMarkdown(%q) = %q leaves a code block open", s, cut)
		}
	})
}
