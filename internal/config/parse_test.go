package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseValid(t *testing.T) {
	cfg, err := Parse("/etc/deployd/repos.yaml", []byte(`
defaults:
  branch: release
  interval: 30s
repos:
  - name: Shop/Web
    url: https://github.com/shop/web.git
    namespace: shop
    auth: {tokenFile: token}
  - name: shop/web
    url: git@github.com:shop/web.git
    namespace: shop-dev
    environment: dev
    path: deploy/overlays/{environment}
    interval: 0
    timeout: 90s
    prune: false
    auth: {sshKeyFile: /keys/id, knownHostsFile: /keys/known_hosts}
    allowClusterScoped: true
    createNamespace: false
    enforcePodSecurity: true
    serviceAccount: deployer
    tagDeployments: true
`), Options{DefaultEnvironment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Repo{{
		Name: "Shop/Web", URL: "https://github.com/shop/web.git", Namespace: "shop", Environment: "prod", CreateNamespace: true,
		Auth:     Auth{TokenFile: "/etc/deployd/token"},
		Settings: Settings{Branch: "release", Path: "deploy/manifests", Interval: 30 * time.Second, Timeout: 5 * time.Minute, Prune: true, DriftInterval: DefaultDriftInterval},
		Line:     6,
	}, {
		Name: "shop/web", URL: "git@github.com:shop/web.git", Namespace: "shop-dev", Environment: "dev",
		AllowClusterScoped: true, EnforcePodSecurity: true, ServiceAccount: "deployer", TagDeployments: true,
		Auth:     Auth{SSHKeyFile: "/keys/id", KnownHostsFile: "/keys/known_hosts"},
		Settings: Settings{Branch: "release", Path: "deploy/overlays/{environment}", Interval: 0, Timeout: 90 * time.Second, Prune: false, DriftInterval: DefaultDriftInterval},
		Line:     10,
	}}
	if diff := cmp.Diff(want, cfg.Repos); diff != "" {
		t.Errorf("repos (-want +got):\n%s", diff)
	}
	if got := cfg.Repos[1].ManifestPath(); got != "deploy/overlays/dev" {
		t.Errorf("ManifestPath = %q, want deploy/overlays/dev", got)
	}
	if cfg.Repos[0].Key() != (Key{Name: "shop/web", Environment: "prod"}) {
		t.Errorf("Key = %v: names must compare case-insensitively", cfg.Repos[0].Key())
	}
}

func TestParseHelmFields(t *testing.T) {
	cfg, err := Parse("repos.yaml", []byte(`
repos:
  - name: shop/Web_App
    url: https://h/shop/web
    namespace: shop
    environment: production
    path: deploy/chart
    values:
    - deploy/values/common.yaml
    - ./deploy/values/{environment}.yaml
    set:
      replicas: 3
      image: {tag: v1.2.3}
  - name: shop/web
    url: https://h/shop/web
    namespace: shop-dev
    environment: dev
    releaseName: web-dev
`), DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Repos[0]
	if diff := cmp.Diff([]string{"deploy/values/common.yaml", "deploy/values/{environment}.yaml"}, r.Values); diff != "" {
		t.Errorf("values (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]any{"replicas": 3, "image": map[string]any{"tag": "v1.2.3"}}, r.Set); diff != "" {
		t.Errorf("set (-want +got):\n%s", diff)
	}
	for i, want := range []string{"web-app", "web-dev"} {
		if got := cfg.Repos[i].HelmReleaseName(); got != want {
			t.Errorf("repos[%d].HelmReleaseName() = %q, want %q", i, got, want)
		}
	}
}

func TestParseTheExampleFile(t *testing.T) {
	cfg, err := Load("../../repos.yaml", DefaultOptions())
	if err != nil {
		t.Fatalf("the committed repos.yaml must be valid:\n%v", err)
	}
	if len(cfg.Repos) != 2 || cfg.Repos[1].Interval != 30*time.Second {
		t.Errorf("repos.yaml parsed as %+v", cfg.Repos)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // each problem, as printed
	}{{
		name: "unknown field with a suggestion",
		yaml: "repos:\n  - name: a/b\n    url: https://h/a/b\n    namspace: x\n",
		want: []string{
			`repos.yaml:2: repos[0].namespace: missing: set namespace (the namespace its manifests go to)`,
			`repos.yaml:4: repos[0].namspace: field not known (did you mean "namespace"?); known fields here: allowClusterScoped, auth, branch, createNamespace, drift, driftInterval, enforcePodSecurity, environment, environmentUrl, interval, name, namespace, path, productionEnvironment, promoteFrom, promotion, prune, releaseName, serviceAccount, set, tagDeployments, timeout, transientEnvironment, url, values`,
		},
	}, {
		name: "helm values, set and releaseName that are not valid",
		yaml: "repos:\n  - name: a/b\n    url: https://h/a/b\n    namespace: x\n    values: deploy/values.yaml\n    set: [a, b]\n    releaseName: Web_App\n  - name: a/c\n    url: https://h/a/c\n    namespace: x\n    values: [../secrets.yaml, {a: b}]\n    set: {a: {[1, 2]: x}}\n",
		want: []string{
			`repos.yaml:5: repos[0].values: must be a list of values files in the repo (e.g. [deploy/values/{environment}.yaml]), not "deploy/values.yaml"`,
			`repos.yaml:6: repos[0].set: must be a mapping of a chart's values (e.g. {image: {tag: v1.2.3}}), not a list`,
			`repos.yaml:7: repos[0].releaseName: "Web_App" is not a valid release name: lowercase letters, digits and '-', at most 53 characters (e.g. "web-app")`,
			`repos.yaml:11: repos[1].values[0]: "../secrets.yaml" points outside the repo: remove the '..'`,
			`repos.yaml:11: repos[1].values[1]: must be a path in the repo such as deploy/values/{environment}.yaml, not a mapping`,
			`repos.yaml:12: repos[1].set: cannot be read as a chart's values: yaml: invalid map key: []interface {}{1, 2}`,
		},
	}, {
		name: "tagDeployments where deployd cannot push",
		yaml: "repos:\n" +
			"  - {name: a/b, url: 'https://h/a/b', namespace: x, tagDeployments: true}\n" +
			"  - {name: a/c, url: 'git://h/a/c', namespace: x, tagDeployments: true}\n" +
			"  - {name: a/d, url: 'https://h/a/d', namespace: x, tagDeployments: yes please}\n" +
			"  - {name: a/e, url: 'https://h/a/e', namespace: x, tagDeployments: true, auth: {tokenFile: t}}\n" +
			"  - {name: a/f, url: 'git@h:a/f.git', namespace: x, tagDeployments: true, auth: {sshKeyFile: k}}\n" +
			"  - {name: a/g, url: 'http://127.0.0.1:8080/a/g.git', namespace: x, tagDeployments: true}\n",
		want: []string{
			`repos.yaml:2: repos[0].tagDeployments: pushing tags needs credentials with push rights: set auth.tokenFile (a token allowed to write contents) or auth.sshKeyFile (a deploy key with write access)`,
			`repos.yaml:3: repos[1].tagDeployments: the git:// protocol cannot push tags: use an https or ssh URL with auth.tokenFile or auth.sshKeyFile`,
			`repos.yaml:4: repos[2].tagDeployments: must be true or false, not "yes please"`,
		},
	}, {
		name: "unknown top-level and defaults fields",
		yaml: "default:\n  branch: main\nrepos: []\n",
		want: []string{`repos.yaml:1: default: field not known (did you mean "defaults"?); known fields here: defaults, repos`},
	}, {
		name: "duplicate name and environment, case-insensitively",
		yaml: "repos:\n  - {name: a/b, url: 'https://h/a/b', namespace: x, environment: dev}\n  - {name: A/B, url: 'https://h/a/b', namespace: y, environment: dev}\n",
		want: []string{`repos.yaml:3: repos[1]: A/B in environment "dev" is already configured at line 2: give one of them another environment, or remove one`},
	}, {
		name: "bad owner/repo",
		yaml: "repos:\n  - {name: just-a-name, url: 'https://h/a/b', namespace: x}\n  - {name: -bad/b, url: 'https://h/a/b', namespace: x}\n",
		want: []string{
			`repos.yaml:2: repos[0].name: "just-a-name" is not owner/repo: write it as on GitHub, e.g. haraldsk/an-application`,
			`repos.yaml:3: repos[1].name: owner "-bad" is not valid: letters, digits and '-', at most 39, not starting with '-'`,
		},
	}, {
		name: "urls deployd cannot use, and no secret in the message",
		yaml: "repos:\n  - {name: a/b, url: 'ftp://h/a/b', namespace: x}\n  - {name: a/c, url: 'https://me:s3cret@h/a/c', namespace: x}\n  - {name: a/d, url: 'not a url', namespace: x}\n  - {name: a/e, url: 'file://relative', namespace: x}\n",
		want: []string{
			`repos.yaml:2: repos[0].url: scheme "ftp" is not supported: use https, http, ssh, git or file`,
			`repos.yaml:3: repos[1].url: https://xxxxx@h/a/c has a user name, password or token in it: remove it and put the token in a file named by auth.tokenFile`,
			`repos.yaml:4: repos[2].url: "not a url" is not a URL deployd can fetch: use https://host/owner/repo.git, ssh://git@host/owner/repo.git, git@host:owner/repo.git or file:///path`,
			`repos.yaml:5: repos[3].url: "file://relative" needs an absolute path: file:///srv/git/app.git`,
		},
	}, {
		name: "namespace not a DNS label",
		yaml: "repos:\n  - name: a/b\n    url: https://h/a/b\n    namespace: My_App\n",
		want: []string{`repos.yaml:4: repos[0].namespace: "My_App" is not a valid namespace name: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters (e.g. "my-app")`},
	}, {
		name: "negative, unparsable and unitless durations",
		yaml: "defaults:\n  interval: -1m\n  timeout: soon\nrepos:\n  - {name: a/b, url: 'https://h/a/b', namespace: x, timeout: 30, interval: 0}\n  - {name: a/c, url: 'https://h/a/c', namespace: x, timeout: 0}\n",
		want: []string{
			`repos.yaml:2: defaults.interval: -1m is negative: give a duration of 0 or more`,
			`repos.yaml:3: defaults.timeout: "soon" is not a duration: write it like 30s, 1m or 1h30m`,
			`repos.yaml:5: repos[0].timeout: "30" has no unit: write it as a duration such as 30s or 30m`,
			`repos.yaml:6: repos[1].timeout: must be more than 0 (e.g. 5m)`,
		},
	}, {
		name: "YAML syntax error names its line",
		yaml: "repos:\n  - name: a/b\n    url: [unclosed\n",
		want: []string{`repos.yaml:3: YAML syntax error: sequence end token ']' not found`},
	}, {
		name: "wrong types",
		yaml: "repos:\n  - name: a/b\n    url: https://h/a/b\n    namespace: x\n    prune: yes please\n    branch: [a]\n",
		want: []string{
			`repos.yaml:5: repos[0].prune: must be true or false, not "yes please"`,
			`repos.yaml:6: repos[0].branch: must be a branch name such as main, not a list`,
		},
	}, {
		name: "a token in the user name, or sent over http, and never in the message",
		yaml: "repos:\n" +
			"  - {name: a/b, url: 'https://ghp_t0ken@h/a/b', namespace: x}\n" +
			"  - {name: a/c, url: 'ssh://git:t0ken@h/a/c', namespace: x}\n" +
			"  - {name: a/d, url: 'http://git.example/a/d', namespace: x, auth: {tokenFile: t}}\n" +
			"  - {name: a/e, url: 'https://t0ken@h/%zz', namespace: x}\n" +
			"  - {name: a/f, url: 'git://t0ken@h/a/f', namespace: x}\n",
		want: []string{
			`repos.yaml:2: repos[0].url: https://xxxxx@h/a/b has a user name, password or token in it: remove it and put the token in a file named by auth.tokenFile`,
			`repos.yaml:3: repos[1].url: ssh://xxxxx@h/a/c has a user name, password or token in it: remove it and put the token in a file named by auth.tokenFile`,
			`repos.yaml:4: repos[2].auth.tokenFile: a token is sent only over https, but the url is http: use the https URL`,
			`repos.yaml:5: repos[3].url: is not a valid URL: invalid URL escape "%zz"`,
			`repos.yaml:6: repos[4].url: git://xxxxx@h/a/f has a user name, password or token in it: remove it and put the token in a file named by auth.tokenFile`,
		},
	}, {
		name: "credentials that do not fit the url",
		yaml: "repos:\n  - {name: a/b, url: 'git@h:a/b.git', namespace: x, auth: {tokenFile: t}}\n  - {name: a/c, url: 'https://h/a/c', namespace: x, auth: {knownHostsFile: k}}\n",
		want: []string{
			`repos.yaml:2: repos[0].auth.tokenFile: a token works with https URLs, but the url is ssh: use an https URL or auth.sshKeyFile`,
			`repos.yaml:3: repos[1].auth.knownHostsFile: only used with auth.sshKeyFile`,
		},
	}, {
		name: "path outside the repo and bad branch",
		yaml: "repos:\n  - {name: a/b, url: 'https://h/a/b', namespace: x, path: ../etc, branch: refs/heads/main}\n",
		want: []string{
			`repos.yaml:2: repos[0].path: "../etc" points outside the repo: remove the '..'`,
			`repos.yaml:2: repos[0].branch: "refs/heads/main" is a ref: give the branch name alone, e.g. "main"`,
		},
	}, {
		name: "a key set twice",
		yaml: "repos:\n  - name: a/b\n    url: https://h/a/b\n    namespace: x\n    namespace: y\n",
		want: []string{`repos.yaml:5: repos[0].namespace: set twice (first at line 4); keep one`},
	}, {
		name: "empty file",
		yaml: "",
		want: []string{`repos.yaml: file is empty: it needs a repos: list (see the commented repos.yaml in deployd's repository)`},
	}, {
		name: "repos is not a list",
		yaml: "repos:\n  name: a/b\n",
		want: []string{`repos.yaml:2: repos: must be a list of repositories (each item starting with '- name:'), not a mapping`},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("repos.yaml", []byte(tt.yaml), DefaultOptions())
			var cfgErr *Error
			if !errors.As(err, &cfgErr) {
				t.Fatalf("Parse error = %v, want a *config.Error", err)
			}
			got := strings.Split(cfgErr.Error(), "\n")
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

func TestURLsWithUsersThatAreNotTokens(t *testing.T) {
	yaml := "repos:\n" +
		"  - {name: a/b, url: 'ssh://git@h/a/b.git', namespace: x}\n" +
		"  - {name: a/c, url: 'git@h:a/c.git', namespace: x}\n" +
		"  - {name: a/d, url: 'http://127.0.0.1:8080/a/d.git', namespace: x, auth: {tokenFile: t}}\n" +
		"  - {name: a/e, url: 'http://localhost/a/e.git', namespace: x, auth: {tokenFile: t}}\n"
	if _, err := Parse("repos.yaml", []byte(yaml), DefaultOptions()); err != nil {
		t.Errorf("an SSH user, and a token over http to this machine, are refused: %v", err)
	}
}

func TestParseReportsEveryProblemAtOnce(t *testing.T) {
	_, err := Parse("r.yaml", []byte("repos:\n  - {name: x, url: 'ftp://h', namespace: A}\n  - {name: y, url: 'ftp://h', namespace: B}\n"), DefaultOptions())
	var cfgErr *Error
	if !errors.As(err, &cfgErr) || len(cfgErr.Problems) != 6 {
		t.Fatalf("want 6 problems (3 per repo), got %v", err)
	}
}

func TestDiff(t *testing.T) {
	parse := func(s string) *Config {
		c, err := Parse("r.yaml", []byte(s), DefaultOptions())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	old := parse("repos:\n- {name: a/a, url: 'https://h/a', namespace: a}\n- {name: a/b, url: 'https://h/b', namespace: b}\n")
	cur := parse("repos:\n\n- {name: a/b, url: 'https://h/b', namespace: b}\n- {name: a/c, url: 'https://h/c', namespace: c}\n- {name: a/a, url: 'https://h/a', namespace: z}\n")
	want := Changes{
		Added:   []Key{{"a/c", "production"}},
		Changed: []Key{{"a/a", "production"}},
	}
	if diff := cmp.Diff(want, Diff(old, cur)); diff != "" {
		t.Errorf("Diff (-want +got):\n%s", diff)
	}
	if got := Diff(cur, old); len(got.Removed) != 1 || got.Removed[0].Name != "a/c" {
		t.Errorf("Diff back = %+v, want a/c removed", got)
	}
}

func TestPathsOutsideTheRepoAreRefused(t *testing.T) {
	refused := []struct{ path, want string }{
		{"../../etc", `"../../etc" points outside the repo: remove the '..'`},
		{"deploy/../../etc", `"deploy/../../etc" points outside the repo: remove the '..'`},
		{"./..", `"./.." points outside the repo: remove the '..'`},
		{"deploy/{environment}/../../..", `"deploy/{environment}/../../.." points outside the repo: remove the '..'`},
		{"/etc", `"/etc" must be relative to the repo's root, e.g. deploy/manifests`},
		{`deploy\..\..\etc`, `"deploy\\..\\..\\etc" must use '/' between directories`},
	}
	for _, tc := range refused {
		for _, where := range []string{"repos[0]", "defaults"} {
			t.Run(where+" "+tc.path, func(t *testing.T) {
				yaml := "repos:\n  - {name: a/b, url: 'https://h/a/b', namespace: x, path: '" + tc.path + "'}\n"
				want := "repos.yaml:2: repos[0].path: " + tc.want
				if where == "defaults" {
					yaml = "defaults:\n  path: '" + tc.path + "'\nrepos:\n  - {name: a/b, url: 'https://h/a/b', namespace: x}\n"
					want = "repos.yaml:2: defaults.path: " + tc.want
				}
				_, err := Parse("repos.yaml", []byte(yaml), DefaultOptions())
				if err == nil || err.Error() != want {
					t.Errorf("Parse error = %v\nwant %s", err, want)
				}
			})
		}
	}
	kept := map[string]string{"deploy/../manifests": "manifests", "./deploy/": "deploy", ".": ".", "..deploy/x..": "..deploy/x.."}
	for path, want := range kept {
		cfg, err := Parse("repos.yaml", []byte("repos:\n  - {name: a/b, url: 'https://h/a/b', namespace: x, path: '"+path+"'}\n"), DefaultOptions())
		if err != nil || cfg.Repos[0].Path != want {
			t.Errorf("path %q: %v, %v; want it kept as %q", path, cfg, err, want)
		}
	}
}

func TestDriftPolicy(t *testing.T) {
	tests := []struct {
		yaml, want, problem string
	}{
		{yaml: "", want: "correct"},
		{yaml: "    drift: report\n", want: "report"},
		{yaml: "    drift: ignore\n", want: "ignore"},
		{yaml: "    drift: fix\n", problem: `repos.yaml:5: repos[0].drift: "fix" is not a drift policy: use correct, report or ignore`},
	}
	for _, tt := range tests {
		cfg, err := Parse("repos.yaml", []byte("repos:\n  - name: a/b\n    url: https://h/a/b\n    namespace: x\n"+tt.yaml), DefaultOptions())
		if tt.problem != "" {
			if err == nil || err.Error() != tt.problem {
				t.Errorf("%q: error %v, want %s", tt.yaml, err, tt.problem)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := string(cfg.Repos[0].DriftPolicy()); got != tt.want {
			t.Errorf("%q: policy %s, want %s", tt.yaml, got, tt.want)
		}
	}
}
