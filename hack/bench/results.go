package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// figure is one measured figure: a series (median, min, max of N runs) or a single value.
type figure struct {
	// Value is the figure compared with the goal: the median of a series.
	Value  float64 `json:"value"`
	Median float64 `json:"median,omitempty"`
	Min    float64 `json:"min,omitempty"`
	Max    float64 `json:"max,omitempty"`
	N      int     `json:"runs,omitempty"`
	Unit   string  `json:"unit"`
}

// row is a figure with what it is and its goal.
type row struct {
	Scenario int    `json:"scenario"`
	Name     string `json:"name"`
	figure
	Goal string `json:"goal,omitempty"`
	// Met is "yes" or "no" where there is a goal, empty where the row only informs.
	Met string `json:"met,omitempty"`
}

// machine says where the figures were taken.
type machine struct {
	Cores  int    `json:"cores"`
	Memory string `json:"memory"`
	CPU    string `json:"cpu"`
	Go     string `json:"go"`
}

type results struct {
	Date     time.Time         `json:"date"`
	Machine  machine           `json:"machine"`
	Commit   string            `json:"commit"`
	Rows     []row             `json:"rows"`
	Failures map[string]string `json:"failures,omitempty"`
	// Flux is scenario 11, deployd ÷ Flux (fluxresults.go).
	Flux *fluxTable `json:"flux,omitempty"`
}

// add records a figure; met is a bool when there is a goal, nil otherwise.
func (r *results) add(scenario int, name string, f figure, goal string, met any) {
	row := row{Scenario: scenario, Name: name, figure: f, Goal: goal}
	if b, ok := met.(bool); ok {
		row.Met = map[bool]string{true: "yes", false: "no"}[b]
	}
	r.Rows = append(r.Rows, row)
}

func (r *results) fail(scenario string, err error) {
	if r.Failures == nil {
		r.Failures = map[string]string{}
	}
	r.Failures[scenario] = err.Error()
	progress("%s failed: %v", scenario, err)
}

func series(ds []time.Duration) figure {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	m := median(s)
	return figure{Value: msf(m), Median: msf(m), Min: msf(s[0]), Max: msf(s[len(s)-1]), N: len(s), Unit: "ms"}
}

func single(d time.Duration) figure {
	if d >= 10*time.Second {
		return figure{Value: d.Seconds(), Unit: "s"}
	}
	return figure{Value: msf(d), Unit: "ms"}
}

func value(v float64, unit string) figure { return figure{Value: v, Unit: unit} }

func ratio(a, b time.Duration) figure { return figure{Value: float64(a) / float64(b), Unit: "×"} }

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", msf(d)) }

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func num(v float64) string {
	switch {
	case v >= 10000:
		s := fmt.Sprintf("%.0f", v)
		for i := len(s) - 3; i > 0; i -= 3 {
			s = s[:i] + "," + s[i:]
		}
		return s
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

func (f figure) String() string {
	unit := " " + f.Unit
	if f.Unit == "×" {
		unit = "×"
	}
	if f.N > 1 {
		return fmt.Sprintf("%s%s (%s–%s, %d runs)", num(f.Median), unit, num(f.Min), num(f.Max), f.N)
	}
	return num(f.Value) + unit
}

var scenarioNames = map[int]string{
	1: "Push → applied", 2: "Rollout finished → reported", 3: "Idle cost at scale",
	4: "Many rollouts at once", 5: "Cold start at scale", 6: "Status API throughput",
	7: "Webhooks under load", 8: "Hostile repos beside calm ones",
	9: "On the real node", 10: "Drift corrected", 11: "Side by side with Flux", 12: "Pull request previewed",
}

// markdown is the results table.
func (r *results) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run %s on %d cores (%s), %s memory, %s, deployd %s.\n\n", r.Date.Format("2006-01-02 15:04 MST"),
		r.Machine.Cores, r.Machine.CPU, r.Machine.Memory, r.Machine.Go, r.Commit)
	b.WriteString("| # | scenario | figure | result | goal | met |\n|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s |\n", row.Scenario, scenarioNames[row.Scenario], row.Name, row.figure, row.Goal, row.Met)
	}
	if len(r.Failures) > 0 {
		b.WriteString("\nScenarios that did not finish:\n\n")
		keys := make([]string, 0, len(r.Failures))
		for k := range r.Failures {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "- %s: %s\n", k, strings.ReplaceAll(r.Failures[k], "\n", " "))
		}
	}
	return b.String()
}

// write stores the results as bench/results/<date>.json and the table in bench/RESULTS.md
// and the README (when readme names it), between the markers, keeping the prose around it.
func (r *results) write(dir, readme string) error {
	if err := os.MkdirAll(filepath.Join(dir, "results"), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	name := filepath.Join(dir, "results", r.Date.Format("2006-01-02T150405")+".json")
	if err := os.WriteFile(name, append(b, '\n'), 0o644); err != nil {
		return err
	}
	figures := "\nFigures: `" + filepath.ToSlash(name) + "`.\n"
	// A run of scenario 11 alone leaves the other scenarios' table as it was, and the
	// other way round.
	blocks := []struct{ marker, table string }{{"bench", r.markdown() + figures}, {"bench-flux", r.fluxMarkdown() + figures}}
	if !r.hasMain() {
		blocks = blocks[1:]
	}
	if r.Flux == nil {
		blocks = blocks[:len(blocks)-1]
	}
	for _, bl := range blocks {
		if err := replaceTable(filepath.Join(dir, "RESULTS.md"), bl.marker, bl.table, true); err != nil {
			return err
		}
		if readme != "" {
			if err := replaceTable(readme, bl.marker, bl.table, false); err != nil {
				return err
			}
		}
	}
	return nil
}

// replaceTable puts table between the marker's begin and end comments of the Markdown file
// at path; when the file has no markers, they are added (the first table prepended, others
// appended) if add, else the file is left alone.
func replaceTable(path, marker, table string, add bool) error {
	begin, end := "<!-- "+marker+":begin -->", "<!-- "+marker+":end -->"
	old, err := os.ReadFile(path)
	if err != nil && !add {
		return err
	}
	text := string(old)
	block := begin + "\n" + table + end
	if i, j := strings.Index(text, begin), strings.Index(text, end); i >= 0 && j > i {
		text = text[:i] + block + text[j+len(end):]
	} else if add && marker == "bench" {
		text = "# Benchmark results\n\n" + block + "\n\n" + text
	} else if add {
		text = strings.TrimRight(text, "\n") + "\n\n" + block + "\n"
	} else {
		return nil
	}
	return os.WriteFile(path, []byte(text), 0o644)
}

func machineInfo() machine {
	m := machine{Cores: runtime.NumCPU(), Go: runtime.Version(), Memory: "?", CPU: "?"}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		if _, err := fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %f kB", &kb); err == nil {
			m.Memory = fmt.Sprintf("%.0f GiB", kb/1024/1024)
		}
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}
