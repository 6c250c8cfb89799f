package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParsePromotion(t *testing.T) {
	cfg, err := Parse("repos.yaml", []byte(`
repos:
  - {name: acme/web, url: 'https://h/acme/web', namespace: web-staging, environment: staging}
  - {name: acme/web, url: 'https://h/acme/web', namespace: web, environment: production, promoteFrom: staging}
  - {name: acme/web, url: 'https://h/acme/web', namespace: web-eu, environment: eu, promoteFrom: production, promotion: manual}
`), DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	type got struct {
		Env, From string
		Mode      Promotion
	}
	var gots []got
	for _, r := range cfg.Repos {
		gots = append(gots, got{r.Environment, r.PromoteFrom, r.Promotion})
	}
	want := []got{{"staging", "", ""}, {"production", "staging", PromotionAuto}, {"eu", "production", PromotionManual}}
	if diff := cmp.Diff(want, gots); diff != "" {
		t.Errorf("promotion (-want +got):\n%s", diff)
	}
	if src, ok := cfg.PromotionSource(cfg.Repos[1]); !ok || src.Namespace != "web-staging" {
		t.Errorf("PromotionSource(production) = %v, %v; want the staging entry", src.Key(), ok)
	}
	if p := cfg.Promoters(cfg.Repos[0].Key()); len(p) != 1 || p[0].Environment != "production" {
		t.Errorf("Promoters(staging) = %v, want production", p)
	}
}

func TestParsePromotionRemote(t *testing.T) {
	yaml := "repos:\n  - {name: acme/web, url: 'https://h/acme/web', namespace: web, environment: production, promoteFrom: staging}\n"
	if _, err := Parse("repos.yaml", []byte(yaml), Options{DefaultEnvironment: "production", GitHub: true}); err != nil {
		t.Errorf("promoteFrom another cluster's environment, with GitHub reporting on: %v", err)
	}
}

func TestParsePromotionErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{{
		name: "another cluster's environment without GitHub",
		yaml: "repos:\n  - name: acme/web\n    url: https://h/acme/web\n    namespace: web\n    promoteFrom: staging\n",
		want: []string{`repos.yaml:5: repos[0].promoteFrom: no entry of acme/web has environment "staging" in this file, so it must be another cluster's deployd, whose outcomes deployd reads from GitHub's deployment statuses: start deployd with --github-token-file or a GitHub App, or add the staging entry`},
	}, {
		name: "another repo's environment does not count",
		yaml: "repos:\n  - {name: acme/api, url: 'https://h/acme/api', namespace: api, environment: staging}\n  - {name: acme/web, url: 'https://h/acme/web', namespace: web, promoteFrom: staging}\n",
		want: []string{`repos.yaml:3: repos[1].promoteFrom: no entry of acme/web has environment "staging" in this file, so it must be another cluster's deployd, whose outcomes deployd reads from GitHub's deployment statuses: start deployd with --github-token-file or a GitHub App, or add the staging entry`},
	}, {
		name: "its own environment",
		yaml: "repos:\n  - {name: acme/web, url: 'https://h/acme/web', namespace: web, environment: staging, promoteFrom: staging}\n",
		want: []string{`repos.yaml:2: repos[0].promoteFrom: "staging" is this entry's own environment: name the environment commits come from, e.g. staging`},
	}, {
		name: "promotion without promoteFrom, and not a mode",
		yaml: "repos:\n  - {name: acme/web, url: 'https://h/acme/web', namespace: web, promotion: manual}\n  - {name: acme/api, url: 'https://h/acme/api', namespace: api, promoteFrom: Staging, promotion: later}\n",
		want: []string{
			`repos.yaml:2: repos[0].promotion: only used with promoteFrom: name the environment this one promotes from, or remove promotion`,
			`repos.yaml:3: repos[1].promoteFrom: "Staging" is not a valid environment name: lowercase letters, digits and '-', at most 63 characters (e.g. "staging"); it is used in Kubernetes names and labels`,
			`repos.yaml:3: repos[1].promotion: "later" is not a promotion mode: use auto or manual`,
		},
	}, {
		name: "a circle",
		yaml: "repos:\n  - {name: acme/web, url: 'https://h/acme/web', namespace: a, environment: staging, promoteFrom: production}\n  - {name: acme/web, url: 'https://h/acme/web', namespace: b, environment: production, promoteFrom: staging}\n",
		want: []string{
			`repos.yaml:2: repos[0].promoteFrom: promotion goes round in a circle (staging ← production ← staging): one environment must take commits from its branch, without promoteFrom`,
			`repos.yaml:3: repos[1].promoteFrom: promotion goes round in a circle (production ← staging ← production): one environment must take commits from its branch, without promoteFrom`,
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("repos.yaml", []byte(tt.yaml), DefaultOptions())
			var cfgErr *Error
			if !errors.As(err, &cfgErr) {
				t.Fatalf("Parse error = %v, want a *config.Error", err)
			}
			if diff := cmp.Diff(tt.want, strings.Split(cfgErr.Error(), "\n")); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}
