package main

import (
	"flag"
	"time"
)

// quickDefaults shrinks every scenario for -quick: a few minutes in all, enough to run each
// scenario's code (deployd and Flux both) and fail when the harness breaks; the figures
// mean little and no timing is asserted. Flags given on the command line keep their values.
func quickDefaults(o *options) {
	given := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { given[f.Name] = true })
	set := func(name string, apply func()) {
		if !given[name] {
			apply()
		}
	}
	set("out", func() { o.out = "bin/bench-quick" })
	set("readme", func() { o.readme = "" })
	set("runs", func() { o.runs = 2 })
	set("repos", func() { o.repos = 20 })
	set("many", func() { o.many = 5 })
	set("idle", func() { o.idle = 20 * time.Second })
	set("load", func() { o.load = 3 * time.Second })
	set("hooks-repos", func() { o.hooksRepos = 10 })
	set("hooks-rate", func() { o.hooksRate = 5 })
	set("hooks-for", func() { o.hooksFor = 5 * time.Second })
	set("hooks-reads", func() { o.hooksReads = 20 })
	set("hostile-repos", func() { o.hostileRepos = 5 })
	set("flux-runs", func() { o.flux.runs = 2 })
	set("flux-many", func() { o.flux.many = 5 })
	set("flux-many-concurrent", func() { o.flux.manyHigh = 5 })
	set("flux-cold", func() { o.flux.cold = 5 })
	set("flux-idle-repos", func() { o.flux.idleRepos = 20 })
	set("flux-idle", func() { o.flux.idle = 20 * time.Second })
	set("flux-idle-concurrent", func() { o.flux.idleHigh = 20 })
}
