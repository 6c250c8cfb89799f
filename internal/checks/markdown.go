package checks

import (
	"fmt"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/go-github/v60/github"
)

// markdownEscapes turn text from a pull request into inert Markdown: no table cell ends,
// no code span, emphasis, link, math or HTML starts, no @mention or #reference notifies
// anyone.
var markdownEscapes = strings.NewReplacer(
	`\`, `\\`, "|", `\|`, "`", "\\`", "*", `\*`, "_", `\_`, "[", `\[`, "]", `\]`, "~", `\~`, "$", `\$`,
	"&", "&amp;", "<", "&lt;", ">", "&gt;",
	"@", "@\u200b", "#", "#\u200b",
	"\r\n", " ", "\n", " ", "\r", " ", "\t", " ",
)

// Escape makes s, text from a pull request (a file name, an error message), safe to put
// in Markdown, in a table cell too: it stays one line of plain text, mentions and
// references nobody, and cannot close the cell or open HTML.
func Escape(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) && r != '\n' && r != '\r' && r != '\t' {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	return markdownEscapes.Replace(s)
}

// oneLine keeps s to a single line of at most n characters.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	return truncateRunes(s, n)
}

// truncateRunes cuts s to n characters, marking the cut.
func truncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// capMarkdown keeps s within limit bytes (so within limit characters), ending a cut one
// with a note linking the full diff. An open code block is closed before the note.
func capMarkdown(s string, limit int, detailsURL string) string {
	if len(s) <= limit {
		return s
	}
	note := "\n\n**… truncated; full diff: " + detailsURL + "**\n"
	if detailsURL == "" {
		note = "\n\n**… truncated; the full diff is in deployd's API.**\n"
	}
	keep := max(limit-len(note)-len("\n```"), 0)
	for keep > 0 && !utf8.RuneStart(s[keep]) {
		keep--
	}
	cut := s[:keep]
	if strings.Count(cut, "```")%2 == 1 {
		cut += "\n```"
	}
	return cut + note
}

// placed are a report's annotations made ready for GitHub.
type placed struct {
	// anns are the valid annotations, at most Options.MaxAnnotations.
	anns []*github.CheckRunAnnotation
	// total counts the valid ones, sent or not.
	total int
	// unplaced have no usable file: their messages go into the summary.
	unplaced []string
}

// place validates annotations: a path must be relative and inside the repository, a
// line below 1 becomes 1, and a message is capped.
func place(in []Annotation, limit int) placed {
	var p placed
	for _, a := range in {
		msg := truncateRunes(strings.ToValidUTF8(a.Message, "\uFFFD"), maxMessage)
		file, ok := repoPath(a.Path)
		if !ok {
			p.unplaced = append(p.unplaced, msg)
			continue
		}
		p.total++
		if len(p.anns) >= limit {
			continue
		}
		line := max(a.Line, 1)
		p.anns = append(p.anns, &github.CheckRunAnnotation{Path: github.String(file), StartLine: github.Int(line),
			EndLine: github.Int(line), AnnotationLevel: github.String("failure"), Message: github.String(msg)})
	}
	return p
}

// repoPath cleans a path relative to the repository's root, refusing one outside it.
func repoPath(p string) (string, bool) {
	if p == "" || len(p) > 1024 || !utf8.ValidString(p) || strings.HasPrefix(p, "/") ||
		strings.ContainsFunc(p, unicode.IsControl) || strings.Contains(p, `\`) {
		return "", false
	}
	c := path.Clean(p)
	if c == "." || c == ".." || strings.HasPrefix(c, "../") {
		return "", false
	}
	return c, true
}

// notes says in Markdown what the annotations could not show: those over the cap, and
// errors with no file to annotate.
func (p placed) notes(detailsURL string) string {
	var b strings.Builder
	if p.total > len(p.anns) {
		fmt.Fprintf(&b, "\n\n**Showing %d of %d annotations**; every error is in the full diff", len(p.anns), p.total)
		if detailsURL != "" {
			fmt.Fprintf(&b, ": %s", detailsURL)
		}
		b.WriteString(".\n")
	}
	if len(p.unplaced) > 0 {
		b.WriteString("\n\n**Errors without a file:**\n\n")
		for i, m := range p.unplaced {
			if i == 20 {
				fmt.Fprintf(&b, "- … and %d more\n", len(p.unplaced)-i)
				break
			}
			fmt.Fprintf(&b, "- %s\n", Escape(truncateRunes(m, 500)))
		}
	}
	return b.String()
}
