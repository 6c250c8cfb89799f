package config

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// Promotion is how a repo entry with promoteFrom takes a commit from its source environment.
type Promotion string

// The promotion modes.
const (
	// PromotionAuto deploys a commit as soon as the source environment succeeded with it.
	PromotionAuto Promotion = "auto"
	// PromotionManual waits for an explicit request (API, CLI, GitHub deployment).
	PromotionManual Promotion = "manual"
)

func checkPromotion(s string) string {
	switch Promotion(s) {
	case PromotionAuto, PromotionManual:
		return ""
	}
	return fmt.Sprintf("%q is not a promotion mode: use auto or manual", s)
}

// Promotes reports whether the entry is gated on another environment (promoteFrom).
func (r Repo) Promotes() bool { return r.PromoteFrom != "" }

// SourceKey is the key of the environment the entry promotes from (same repo).
func (r Repo) SourceKey() Key {
	return Key{Name: strings.ToLower(r.Name), Environment: r.PromoteFrom}
}

// PromotionSource returns the entry of this config that r promotes from; false when r
// does not promote, or promotes from another cluster's deployd (no such entry here:
// GitHub's deployment statuses answer).
func (c *Config) PromotionSource(r Repo) (Repo, bool) {
	if !r.Promotes() {
		return Repo{}, false
	}
	return c.Repo(r.SourceKey())
}

// Promoters returns the entries that promote from the entry with key k, in file order.
func (c *Config) Promoters(k Key) []Repo {
	var out []Repo
	for _, r := range c.Repos {
		if r.Promotes() && r.SourceKey() == k {
			out = append(out, r)
		}
	}
	return out
}

// checkPromotion defaults promotion to auto when promoteFrom is set, and reports the
// fields that do not fit each other within one entry.
func (p *parser) checkPromotion(r *Repo, field string, n *yaml.Node) {
	switch {
	case r.PromoteFrom == "" && r.Promotion != "":
		p.add(p.promotionNode, join(field, "promotion"), "only used with promoteFrom: name the environment this one promotes from, or remove promotion")
	case r.PromoteFrom != "" && r.PromoteFrom == r.Environment:
		p.add(n, join(field, "promoteFrom"), "%q is this entry's own environment: name the environment commits come from, e.g. staging", r.PromoteFrom)
	case r.PromoteFrom != "" && r.Promotion == "":
		r.Promotion = PromotionAuto
	}
}

// checkPromotions reports, after every entry was read, a promoteFrom that deployd cannot
// answer: an environment of another cluster without GitHub reporting, or a cycle.
func (p *parser) checkPromotions(cfg *Config, nodes map[Key]entryNode) {
	for _, r := range cfg.Repos {
		if !r.Promotes() {
			continue
		}
		n := valueNode(nodes[r.Key()].node, "promoteFrom")
		field := join(nodes[r.Key()].field, "promoteFrom")
		if _, local := cfg.PromotionSource(r); !local && !p.opts.GitHub {
			p.add(n, field, "no entry of %s has environment %q in this file, so it must be another cluster's deployd, whose outcomes deployd reads from GitHub's deployment statuses: start deployd with --github-token-file or a GitHub App, or add the %s entry",
				r.Name, r.PromoteFrom, r.PromoteFrom)
			continue
		}
		if cycle := promotionCycle(cfg, r); cycle != "" {
			p.add(n, field, "promotion goes round in a circle (%s): one environment must take commits from its branch, without promoteFrom", cycle)
		}
	}
}

// promotionCycle returns the environments of a cycle of local promotions through r, or "".
func promotionCycle(cfg *Config, r Repo) string {
	path := []string{r.Environment}
	cur := r
	for range len(cfg.Repos) {
		src, ok := cfg.PromotionSource(cur)
		if !ok {
			return ""
		}
		path = append(path, src.Environment)
		if src.Key() == r.Key() {
			return strings.Join(path, " ← ")
		}
		cur = src
	}
	return ""
}

// entryNode is a repo entry's node and field name, for problems found after reading it.
type entryNode struct {
	field string
	node  *yaml.Node
}

// valueNode is the value of key in mapping n, or n itself when it has none.
func valueNode(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return n
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return n
}
