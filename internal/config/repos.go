package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
	"k8s.io/apimachinery/pkg/util/validation"
)

// settings reads the fields shared by defaults and repos into s; extra adds the
// fields only a repo has.
func (p *parser) settings(n *yaml.Node, field string, s *Settings, extra map[string]func(k, v *yaml.Node)) {
	handlers := map[string]func(k, v *yaml.Node){
		"branch": func(k, v *yaml.Node) {
			if b, ok := p.scalar(v, join(field, "branch"), "a branch name such as main"); ok {
				if msg := checkBranch(b); msg != "" {
					p.add(v, join(field, "branch"), "%q %s", b, msg)
					return
				}
				s.Branch = b
			}
		},
		"path": func(k, v *yaml.Node) {
			if dir, ok := p.scalar(v, join(field, "path"), "a directory in the repo such as deploy/manifests"); ok {
				if msg := checkPath(dir); msg != "" {
					p.add(v, join(field, "path"), "%q %s", dir, msg)
					return
				}
				s.Path = path.Clean(dir)
			}
		},
		"interval":      func(k, v *yaml.Node) { p.duration(v, join(field, "interval"), true, &s.Interval) },
		"timeout":       func(k, v *yaml.Node) { p.duration(v, join(field, "timeout"), false, &s.Timeout) },
		"prune":         func(k, v *yaml.Node) { p.boolean(v, join(field, "prune"), &s.Prune) },
		"driftInterval": func(k, v *yaml.Node) { p.duration(v, join(field, "driftInterval"), true, &s.DriftInterval) },
		"drift": func(k, v *yaml.Node) {
			if d, ok := p.scalar(v, join(field, "drift"), "correct, report or ignore"); ok {
				switch Drift(d) {
				case DriftCorrect, DriftReport, DriftIgnore:
					s.Drift = Drift(d)
				default:
					p.add(v, join(field, "drift"), "%q is not a drift policy: use correct, report or ignore", d)
				}
			}
		},
	}
	for k, h := range extra {
		handlers[k] = h
	}
	p.mapping(n, field, handlers)
}

func (p *parser) repos(n *yaml.Node, cfg *Config) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "repos:" with nothing: a valid, empty config
	}
	if n.Kind != yaml.SequenceNode {
		p.add(n, "repos", "must be a list of repositories (each item starting with '- name:'), not %s", describe(n))
		return
	}
	seen := map[Key]int{}
	nodes := map[Key]entryNode{}
	defer func() { p.checkPromotions(cfg, nodes) }()
	for i, item := range n.Content {
		field := fmt.Sprintf("repos[%d]", i)
		r, ok := p.repo(deref(item), field, cfg.Defaults)
		if !ok {
			continue
		}
		if line, dup := seen[r.Key()]; dup {
			p.add(item, field, "%s in environment %q is already configured at line %d: give one of them another environment, or remove one",
				r.Name, r.Environment, line)
			continue
		}
		seen[r.Key()] = item.Line
		nodes[r.Key()] = entryNode{field: field, node: deref(item)}
		cfg.Repos = append(cfg.Repos, r)
	}
}

// repo reads one entry of repos; ok is false when it had a problem.
func (p *parser) repo(n *yaml.Node, field string, defaults Settings) (Repo, bool) {
	before := len(p.problems)
	r := Repo{Settings: defaults, Environment: p.opts.DefaultEnvironment, Line: n.Line, CreateNamespace: true}
	p.promotionNode = nil
	var urlNode, authNode, tagNode *yaml.Node
	str := func(name, want string, check func(string) string, out *string) func(k, v *yaml.Node) {
		return func(k, v *yaml.Node) {
			if s, ok := p.scalar(v, join(field, name), want); ok {
				if msg := check(s); msg != "" {
					p.add(v, join(field, name), "%s", msg)
					return
				}
				*out = s
			}
		}
	}
	ok := true
	p.settings(n, field, &r.Settings, map[string]func(k, v *yaml.Node){
		"name":        str("name", "owner/repo", checkName, &r.Name),
		"url":         func(k, v *yaml.Node) { urlNode = v; str("url", "the repo's clone URL", checkURL, &r.URL)(k, v) },
		"namespace":   str("namespace", "a Kubernetes namespace name", checkNamespace, &r.Namespace),
		"environment": str("environment", "an environment name such as dev", checkEnvironment, &r.Environment),
		"auth":        func(k, v *yaml.Node) { authNode = v; p.auth(v, join(field, "auth"), &r.Auth) },
		"allowClusterScoped": func(k, v *yaml.Node) {
			p.boolean(v, join(field, "allowClusterScoped"), &r.AllowClusterScoped)
		},
		"createNamespace": func(k, v *yaml.Node) { p.boolean(v, join(field, "createNamespace"), &r.CreateNamespace) },
		"enforcePodSecurity": func(k, v *yaml.Node) {
			p.boolean(v, join(field, "enforcePodSecurity"), &r.EnforcePodSecurity)
		},
		"serviceAccount": str("serviceAccount", "a ServiceAccount name in the repo's namespace", checkServiceAccount, &r.ServiceAccount),
		"environmentUrl": str("environmentUrl", "an http(s) URL", checkHTTPURL, &r.EnvironmentURL),
		"productionEnvironment": func(k, v *yaml.Node) {
			p.boolean(v, join(field, "productionEnvironment"), &r.ProductionEnvironment)
		},
		"transientEnvironment": func(k, v *yaml.Node) {
			p.boolean(v, join(field, "transientEnvironment"), &r.TransientEnvironment)
		},
		"promoteFrom": str("promoteFrom", "an environment name such as staging", checkEnvironment, &r.PromoteFrom),
		"promotion": func(k, v *yaml.Node) {
			p.promotionNode = v
			str("promotion", "auto or manual", checkPromotion, (*string)(&r.Promotion))(k, v)
		},
		"values":      func(k, v *yaml.Node) { p.valueFiles(v, join(field, "values"), &r.Values) },
		"set":         func(k, v *yaml.Node) { p.setValues(v, join(field, "set"), &r.Set) },
		"releaseName": str("releaseName", "a Helm release name such as web", checkReleaseName, &r.ReleaseName),
		"tagDeployments": func(k, v *yaml.Node) {
			tagNode = v
			p.boolean(v, join(field, "tagDeployments"), &r.TagDeployments)
		},
	})
	if deref(n).Kind != yaml.MappingNode {
		return r, false
	}
	for _, req := range []struct{ name, val, why string }{
		{"name", r.Name, "owner/repo, the repo's key in the API"},
		{"url", r.URL, "where to fetch it from"},
		{"namespace", r.Namespace, "the namespace its manifests go to"},
	} {
		if req.val == "" && !p.hasProblem(before, join(field, req.name)) {
			p.add(n, join(field, req.name), "missing: set %s (%s)", req.name, req.why)
			ok = false
		}
	}
	if r.Environment == "" {
		p.add(n, join(field, "environment"), "missing, and deployd has no default: set it here or start deployd with --environment")
	}
	p.checkPromotion(&r, field, n)
	p.checkAuth(r, field, urlNode, authNode)
	p.checkTagging(r, field, tagNode)
	r.Auth = p.resolveAuth(r.Auth)
	return r, ok && len(p.problems) == before
}

func (p *parser) hasProblem(since int, field string) bool {
	for _, pr := range p.problems[since:] {
		if pr.Field == field {
			return true
		}
	}
	return false
}

func (p *parser) auth(n *yaml.Node, field string, a *Auth) {
	file := func(name string, out *string) func(k, v *yaml.Node) {
		return func(k, v *yaml.Node) {
			if s, ok := p.scalar(v, join(field, name), "a file path"); ok {
				*out = s
			}
		}
	}
	p.mapping(n, field, map[string]func(k, v *yaml.Node){
		"tokenFile":      file("tokenFile", &a.TokenFile),
		"sshKeyFile":     file("sshKeyFile", &a.SSHKeyFile),
		"knownHostsFile": file("knownHostsFile", &a.KnownHostsFile),
	})
}

// checkAuth reports credentials that do not fit each other or the URL.
func (p *parser) checkAuth(r Repo, field string, urlNode, authNode *yaml.Node) {
	a := r.Auth
	at := authNode
	if at == nil {
		at = urlNode
	}
	scheme := urlScheme(r.URL)
	switch {
	case a.TokenFile != "" && a.SSHKeyFile != "":
		p.add(at, join(field, "auth"), "set tokenFile or sshKeyFile, not both")
	case a.TokenFile != "" && scheme != "" && scheme != "https" && scheme != "http":
		p.add(at, join(field, "auth.tokenFile"), "a token works with https URLs, but the url is %s: use an https URL or auth.sshKeyFile", scheme)
	case a.TokenFile != "" && scheme == "http" && !loopback(r.URL):
		p.add(at, join(field, "auth.tokenFile"), "a token is sent only over https, but the url is http: use the https URL")
	case a.SSHKeyFile != "" && scheme != "" && scheme != "ssh":
		p.add(at, join(field, "auth.sshKeyFile"), "an SSH key works with ssh URLs (ssh://… or git@host:owner/repo.git), but the url is %s", scheme)
	}
	if a.KnownHostsFile != "" && a.SSHKeyFile == "" {
		p.add(at, join(field, "auth.knownHostsFile"), "only used with auth.sshKeyFile")
	}
}

// checkTagging reports a repo that asks for deployment tags where deployd cannot push:
// a git:// URL (read-only), or a remote URL without credentials (a token or key with
// push rights). Anonymous pushes are let through to this machine's and file:// repos.
func (p *parser) checkTagging(r Repo, field string, at *yaml.Node) {
	if !r.TagDeployments {
		return
	}
	scheme := urlScheme(r.URL)
	switch {
	case scheme == "git":
		p.add(at, join(field, "tagDeployments"), "the git:// protocol cannot push tags: use an https or ssh URL with auth.tokenFile or auth.sshKeyFile")
	case r.Auth.TokenFile == "" && r.Auth.SSHKeyFile == "" && scheme != "file" && !loopback(r.URL):
		p.add(at, join(field, "tagDeployments"), "pushing tags needs credentials with push rights: set auth.tokenFile (a token allowed to write contents) or auth.sshKeyFile (a deploy key with write access)")
	}
}

// resolveAuth makes relative credential paths relative to the config file's directory.
func (p *parser) resolveAuth(a Auth) Auth {
	abs := func(f string) string {
		if f == "" || filepath.IsAbs(f) {
			return f
		}
		return filepath.Join(p.dir, f)
	}
	return Auth{TokenFile: abs(a.TokenFile), SSHKeyFile: abs(a.SSHKeyFile), KnownHostsFile: abs(a.KnownHostsFile)}
}

var (
	ownerRE = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$`)
	repoRE  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
	scpRE   = regexp.MustCompile(`^(?:[A-Za-z0-9._-]+@)?([A-Za-z0-9.-]+):([^/].*)$`)
)

func checkName(s string) string {
	owner, repo, ok := strings.Cut(s, "/")
	switch {
	case !ok || strings.Contains(repo, "/"):
		return fmt.Sprintf("%q is not owner/repo: write it as on GitHub, e.g. haraldsk/an-application", s)
	case !ownerRE.MatchString(owner):
		return fmt.Sprintf("owner %q is not valid: letters, digits and '-', at most 39, not starting with '-'", owner)
	case !repoRE.MatchString(repo) || repo == "." || repo == "..":
		return fmt.Sprintf("repo %q is not valid: letters, digits, '.', '_' and '-', at most 100", repo)
	}
	return ""
}

// urlScheme returns the scheme deployd will use for a repo URL, "ssh" for scp-like ones.
func urlScheme(s string) string {
	if !strings.Contains(s, "://") && scpRE.MatchString(s) {
		return "ssh"
	}
	u, err := url.Parse(s)
	if err != nil {
		return ""
	}
	return u.Scheme
}

// loopback tells a URL whose host is this machine (a local git server in tests): a token
// sent there over http does not cross the network.
func loopback(s string) bool {
	u, err := url.Parse(s)
	if err != nil {
		return false
	}
	if u.Hostname() == "localhost" {
		return true
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.IsLoopback()
}

func checkURL(s string) string {
	if !strings.Contains(s, "://") {
		if scpRE.MatchString(s) {
			return ""
		}
		return fmt.Sprintf("%q is not a URL deployd can fetch: use https://host/owner/repo.git, ssh://git@host/owner/repo.git, git@host:owner/repo.git or file:///path", s)
	}
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may hold a token
		}
		return "is not a valid URL: " + err.Error()
	}
	if u.User != nil {
		// An ssh URL names the SSH user (git@); anywhere else a user name is a token.
		if _, hasPassword := u.User.Password(); hasPassword || u.Scheme != "ssh" {
			u.User = url.User("xxxxx")
			return fmt.Sprintf("%s has a user name, password or token in it: remove it and put the token in a file named by auth.tokenFile", u.Redacted())
		}
	}
	switch u.Scheme {
	case "https", "http", "ssh", "git":
		if u.Host == "" {
			return fmt.Sprintf("%q has no host", s)
		}
	case "file":
		if u.Path == "" || !path.IsAbs(u.Path) {
			return fmt.Sprintf("%q needs an absolute path: file:///srv/git/app.git", s)
		}
	default:
		return fmt.Sprintf("scheme %q is not supported: use https, http, ssh, git or file", u.Scheme)
	}
	return ""
}

func checkNamespace(s string) string {
	if errs := validation.IsDNS1123Label(s); len(errs) > 0 {
		return fmt.Sprintf("%q is not a valid namespace name: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters (e.g. %q)",
			s, exampleLabel(s))
	}
	return ""
}

func checkHTTPURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Sprintf("%q is not an absolute http(s) URL", s)
	}
	return ""
}

func checkServiceAccount(s string) string {
	if errs := validation.IsDNS1123Subdomain(s); len(errs) > 0 {
		return fmt.Sprintf("%q is not a valid ServiceAccount name: lowercase letters, digits, '-' and '.'", s)
	}
	return ""
}

func checkEnvironment(s string) string {
	if errs := validation.IsDNS1123Label(s); len(errs) > 0 {
		return fmt.Sprintf("%q is not a valid environment name: lowercase letters, digits and '-', at most 63 characters (e.g. %q); it is used in Kubernetes names and labels",
			s, exampleLabel(s))
	}
	return ""
}

// CheckNamespace reports why s is not a valid namespace name, or "" when it is.
func CheckNamespace(s string) string { return checkNamespace(s) }

// CheckEnvironment reports why s is not a valid environment name, or "" when it is.
func CheckEnvironment(s string) string { return checkEnvironment(s) }

// exampleLabel suggests a valid label close to s.
func exampleLabel(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	out := strings.Trim(b.String(), "-")
	if len(out) > 63 {
		out = strings.Trim(out[:63], "-")
	}
	if out == "" {
		return "my-app"
	}
	return out
}

func checkBranch(b string) string {
	switch {
	case strings.HasPrefix(b, "refs/"):
		return fmt.Sprintf("is a ref: give the branch name alone, e.g. %q", strings.TrimPrefix(b, "refs/heads/"))
	case b == "@", strings.HasPrefix(b, "-"), strings.HasPrefix(b, "/"), strings.HasSuffix(b, "/"),
		strings.HasSuffix(b, "."), strings.HasSuffix(b, ".lock"), strings.Contains(b, ".."),
		strings.Contains(b, "//"), strings.Contains(b, "@{"), strings.ContainsAny(b, " ~^:?*[\\\t"):
		return "is not a valid branch name (see git check-ref-format)"
	}
	for _, r := range b {
		if r < 0x20 || r == 0x7f {
			return "is not a valid branch name: it has a control character"
		}
	}
	return ""
}

func checkPath(p string) string {
	switch {
	case path.IsAbs(p):
		return "must be relative to the repo's root, e.g. deploy/manifests"
	case path.Clean(p) == ".." || strings.HasPrefix(path.Clean(p), "../"):
		return "points outside the repo: remove the '..'"
	case strings.Contains(p, "\\"):
		return "must use '/' between directories"
	}
	return ""
}

// maxValueFiles bounds a repo's values list.
const maxValueFiles = 20

// valueFiles reads a repo's values: a list of paths in the repo.
func (p *parser) valueFiles(n *yaml.Node, field string, out *[]string) {
	n = deref(n)
	if n.Kind != yaml.SequenceNode {
		p.add(n, field, "must be a list of values files in the repo (e.g. [deploy/values/{environment}.yaml]), not %s", describe(n))
		return
	}
	if len(n.Content) > maxValueFiles {
		p.add(n, field, "has %d files, more than %d: merge some of them", len(n.Content), maxValueFiles)
		return
	}
	for i, item := range n.Content {
		f := fmt.Sprintf("%s[%d]", field, i)
		s, ok := p.scalar(item, f, "a path in the repo such as deploy/values/{environment}.yaml")
		if !ok {
			continue
		}
		if msg := checkPath(s); msg != "" {
			p.add(item, f, "%q %s", s, msg)
			continue
		}
		*out = append(*out, path.Clean(s))
	}
}

// setValues reads a repo's set: a mapping of a chart's values, as in a values file.
func (p *parser) setValues(n *yaml.Node, field string, out *map[string]any) {
	if deref(n).Kind != yaml.MappingNode {
		p.add(n, field, "must be a mapping of a chart's values (e.g. {image: {tag: v1.2.3}}), not %s", describe(n))
		return
	}
	var m map[string]any
	if err := n.Decode(&m); err != nil {
		p.add(n, field, "cannot be read as a chart's values: %v", err)
		return
	}
	if _, err := json.Marshal(m); err != nil {
		p.add(n, field, "cannot be a chart's values (keys must be strings): %v", err)
		return
	}
	*out = m
}

// checkReleaseName checks a Helm release name as Helm does: a DNS label of at most 53
// characters (Helm adds suffixes to it).
func checkReleaseName(s string) string {
	if errs := validation.IsDNS1123Label(s); len(errs) > 0 || len(s) > 53 {
		return fmt.Sprintf("%q is not a valid release name: lowercase letters, digits and '-', at most 53 characters (e.g. %q)", s, exampleLabel(s))
	}
	return ""
}
