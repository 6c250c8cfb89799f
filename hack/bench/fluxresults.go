package main

import (
	"fmt"
	"sort"
	"strings"
)

// comparison is one figure measured for both tools in the same run, and their ratio.
type comparison struct {
	Name    string  `json:"name"`
	Deployd figure  `json:"deployd"`
	Flux    figure  `json:"flux"`
	Ratio   float64 `json:"ratio"`
	// Goal is the most deployd ÷ Flux may be, 0 where the row only informs.
	Goal float64 `json:"goal,omitempty"`
	Met  string  `json:"met,omitempty"`
}

// fluxTable is scenario 11: deployd ÷ Flux, with both tools' settings.
type fluxTable struct {
	Settings []string     `json:"settings"`
	Rows     []comparison `json:"rows"`
}

// compare records deployd's and Flux's figure for the same thing; goal > 0 is the most
// their ratio may be.
func (r *results) compare(name string, deployd, flux figure, goal float64) {
	if r.Flux == nil {
		r.Flux = &fluxTable{}
	}
	c := comparison{Name: name, Deployd: deployd, Flux: flux, Goal: goal}
	if f := inBase(flux); f > 0 {
		c.Ratio = inBase(deployd) / f
	}
	if goal > 0 {
		c.Met = map[bool]string{true: "yes", false: "no"}[flux.Value > 0 && c.Ratio <= goal]
	}
	r.Flux.Rows = append(r.Flux.Rows, c)
}

// inBase is a figure's value in ms where it is a duration (single() writes 10 s and more
// in s), else as it is, so two figures of one row divide whatever their units.
func inBase(f figure) float64 {
	if f.Unit == "s" {
		return f.Value * 1000
	}
	return f.Value
}

// fluxSettings lists how both tools ran, so a reader can disagree with one and rerun.
func (r *results) fluxSettings(o fluxOptions) {
	if r.Flux == nil {
		r.Flux = &fluxTable{}
	}
	args := o.deploydArgs
	if args == "" {
		args = "none (--concurrency 16)"
	}
	r.Flux.Settings = []string{
		fmt.Sprintf("deployd %s, built from this checkout; extra flags: %s; triggered by its signed GitHub push webhook.", r.Commit, args),
		fmt.Sprintf("Flux source-controller %s and kustomize-controller %s, built from their released Go modules (hack/flux/build.sh), "+
			"run as processes (leader election off) against the same cluster; triggered by setting reconcile.fluxcd.io/requestedAt on the "+
			"GitRepository, what its webhook Receiver does.", fluxSourceVersion, fluxKustomizeVersion),
		fmt.Sprintf("Flux apps: a GitRepository (branch main, interval %s) and a Kustomization (path ./deploy/manifests, targetNamespace, "+
			"prune: true, wait: true, timeout 5m, interval %s); wait: true polls health every %s (kustomize-controller's WaitForSet interval, no flag).",
			o.interval, o.interval, fluxHealthPoll),
		fmt.Sprintf("Flux --concurrent: its defaults (kustomize-controller %d, source-controller 2) unless a row says otherwise; %d in the second many-at-once row. "+
			"Its idle apps were first deployed at --concurrent %d, then both controllers restarted at their defaults and left one interval before the watch.",
			fluxDefaultConcurrent, o.manyHigh, o.idleHigh),
		fmt.Sprintf("Both tools poll every %s, use the same git server (git http-backend) and the same app content, each its own copy of the repos "+
			"in its own namespaces; runs alternate which tool goes first; %d timed runs after one warm-up.", o.interval, o.runs),
		"The machine is shared with other work (2 cores): the figures are noisy, the ratios less so.",
	}
}

// fluxMarkdown is the side-by-side table, empty when scenario 11 did not start.
func (r *results) fluxMarkdown() string {
	if r.Flux == nil {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Run %s on %d cores (%s), %s memory, %s, deployd %s; Flux source-controller %s, kustomize-controller %s.\n\n",
		r.Date.Format("2006-01-02 15:04 MST"), r.Machine.Cores, r.Machine.CPU, r.Machine.Memory, r.Machine.Go, r.Commit, fluxSourceVersion, fluxKustomizeVersion)
	b.WriteString("| figure | deployd | Flux | deployd ÷ Flux | goal | met |\n|---|---|---|---|---|---|\n")
	for _, c := range r.Flux.Rows {
		goal := ""
		if c.Goal > 0 {
			goal = fmt.Sprintf("≤ %s×", num(c.Goal))
		}
		ratio := "–"
		if c.Flux.Value > 0 {
			ratio = num(c.Ratio) + "×"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", c.Name, c.Deployd, c.Flux, ratio, goal, c.Met)
	}
	b.WriteString("\nSettings:\n\n")
	for _, s := range r.Flux.Settings {
		b.WriteString("- " + s + "\n")
	}
	var failed []string
	for k, v := range r.Failures {
		if strings.HasPrefix(k, "scenario 11") {
			failed = append(failed, fmt.Sprintf("- %s: %s\n", k, strings.ReplaceAll(v, "\n", " ")))
		}
	}
	if len(failed) > 0 {
		sort.Strings(failed)
		b.WriteString("\nParts that did not finish:\n\n" + strings.Join(failed, ""))
	}
	return b.String()
}

// hasMain says whether scenarios other than 11 left figures or failures.
func (r *results) hasMain() bool {
	for _, row := range r.Rows {
		if row.Scenario != 11 {
			return true
		}
	}
	for k := range r.Failures {
		if !strings.HasPrefix(k, "scenario 11") {
			return true
		}
	}
	return false
}
