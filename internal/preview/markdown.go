package preview

import (
	"fmt"
	"strings"

	"github.com/deployd/deployd/internal/checks"
)

// DefaultSummaryBytes caps the Markdown summary: GitHub takes 65,535 characters in a
// check run's summary, and the full diff is behind the API link.
const DefaultSummaryBytes = 60_000

// Markdown is an environment's preview as Markdown tables, at most maxBytes long: rows
// past it are left out, with a count and the link to the full diff (detailsURL).
func Markdown(res Result, detailsURL string, maxBytes int) string {
	m := &md{max: maxBytes - 300} // room for the closing lines
	m.line(fmt.Sprintf("### deployd / %s — `%s`\n", res.Environment, short(res.Commit)))
	m.line(checks.Escape(Title(res)) + "\n")
	if res.State != StateDone {
		m.problems(res)
		return m.end(detailsURL)
	}
	m.line("| Added | Changed | Pruned | Unchanged |")
	m.line("|---:|---:|---:|---:|")
	m.line(fmt.Sprintf("| %d | %d | %d | %d |\n", len(res.Added), len(res.Changed), len(res.Pruned), res.Unchanged))
	if len(res.Images) > 0 {
		m.table("Images that would change", "| Object | Container | From | To |", len(res.Images), func(i int) string {
			im := res.Images[i]
			return fmt.Sprintf("| %s | %s | %s | %s |", code(im.Object), code(im.Container), code(im.From), code(im.To))
		})
		m.omitted += res.MoreImages
	}
	m.objects("Added", res.Added)
	if len(res.Changed) > 0 {
		var rows []string
		for _, o := range res.Changed {
			for _, f := range o.Fields {
				rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s |", code(o.Object), code(f.Path), code(f.From), code(f.To)))
			}
			if o.MoreFields > 0 {
				rows = append(rows, fmt.Sprintf("| %s | … %d more fields | | |", code(o.Object), o.MoreFields))
			}
		}
		m.table("Changed", "| Object | Field | From | To |", len(rows), func(i int) string { return rows[i] })
	}
	m.objects("Would be pruned", res.Pruned)
	m.objects("Left the manifests, kept", res.Kept)
	return m.end(detailsURL)
}

// md writes lines within a byte budget and counts the rows it left out.
type md struct {
	b       strings.Builder
	max     int
	omitted int
}

func (m *md) line(s string) bool {
	if m.b.Len()+len(s)+1 > m.max {
		m.omitted++
		return false
	}
	m.b.WriteString(s + "\n")
	return true
}

func (m *md) table(title, header string, n int, row func(int) string) {
	sep := "|" + strings.Repeat("---|", strings.Count(header, "|")-1)
	if !m.line("#### "+title+"\n") || !m.line(header) || !m.line(sep) {
		m.omitted += n
		return
	}
	for i := range n {
		m.line(row(i))
	}
	m.line("")
}

func (m *md) objects(title string, objs []ChangedObject) {
	if len(objs) == 0 {
		return
	}
	m.table(title, "| Object | Where |", len(objs), func(i int) string {
		where := objs[i].Source
		if objs[i].Note != "" {
			where = strings.TrimSpace(where + " " + objs[i].Note)
		}
		return fmt.Sprintf("| %s | %s |", code(objs[i].Object), cell(where))
	})
}

func (m *md) problems(res Result) {
	if len(res.Problems) == 0 {
		m.line("```\n" + strings.ReplaceAll(firstLines(res.Error, 20), "```", "'''") + "\n```")
		return
	}
	m.table("Problems", "| File | Line | Object | Problem |", len(res.Problems), func(i int) string {
		p := res.Problems[i]
		return fmt.Sprintf("| %s | %d | %s | %s |", code(p.File), p.Line, code(p.Object), cell(p.Message))
	})
}

func (m *md) end(detailsURL string) string {
	if m.omitted > 0 {
		m.b.WriteString(fmt.Sprintf("\n_%d more rows left out._", m.omitted))
	}
	if detailsURL != "" {
		m.b.WriteString(fmt.Sprintf("\n[The full diff](%s)\n", detailsURL))
	}
	return m.b.String()
}

// code is s as inline code in a table cell ("" stays empty).
func code(s string) string {
	if s == "" {
		return ""
	}
	return "`" + strings.NewReplacer("`", "'", "|", `\|`, "\n", " ").Replace(s) + "`"
}

// cell is s in a table cell: the pull request's text escaped, so it cannot break the
// table, mention anyone or carry HTML.
func cell(s string) string { return checks.Escape(s) }

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = append(lines[:n], "…")
	}
	return strings.Join(lines, "\n")
}
