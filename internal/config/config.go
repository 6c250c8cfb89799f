// Package config reads repos.yaml, the list of app repositories deployd deploys,
// validates it strictly (every problem with file and line), and reloads it when it changes.
package config

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
	"time"
)

// Defaults applied to a repo when neither it nor the file's defaults section sets a field.
const (
	DefaultBranch   = "main"
	DefaultPath     = "deploy/manifests"
	DefaultInterval = time.Minute
	DefaultTimeout  = 5 * time.Minute
	DefaultPrune    = true
	DefaultDrift    = DriftCorrect
	// DefaultDriftInterval is how often the applied commit is dry-run applied.
	DefaultDriftInterval = 10 * time.Minute
)

// Config is a validated repos.yaml.
type Config struct {
	// File is the path the config was read from, as it was given.
	File string `json:"file"`
	// Defaults are the values repos inherit, after built-in defaults were applied.
	Defaults Settings `json:"defaults"`
	// Repos are the configured repositories, in file order, with defaults applied.
	Repos []Repo `json:"repos"`
}

// Settings are the fields a repo may set itself or inherit from the defaults section.
type Settings struct {
	// Branch is the branch whose head is deployed.
	Branch string `json:"branch"`
	// Path is the directory in the repo holding the manifests. It may contain {environment}.
	Path string `json:"path"`
	// Interval is how often the repo is polled; 0 disables polling.
	Interval time.Duration `json:"interval"`
	// Timeout is how long a rollout may take before it counts as failed.
	Timeout time.Duration `json:"timeout"`
	// Prune deletes objects deployd applied earlier that are no longer in the manifests.
	Prune bool `json:"prune"`
	// Drift is what deployd does when the cluster no longer matches what it applied:
	// correct it (re-apply), report it only, or ignore it. Empty means DefaultDrift.
	Drift Drift `json:"drift"`
	// DriftInterval is how often the applied commit is dry-run applied to find drift the
	// watches cannot see (while deployd was down); 0 turns it off.
	DriftInterval time.Duration `json:"driftInterval"`
}

// Drift is a repo's drift policy.
type Drift string

// The drift policies.
const (
	DriftCorrect Drift = "correct"
	DriftReport  Drift = "report"
	DriftIgnore  Drift = "ignore"
)

// DriftPolicy is the repo's drift policy, DefaultDrift when unset.
func (s Settings) DriftPolicy() Drift {
	if s.Drift == "" {
		return DefaultDrift
	}
	return s.Drift
}

// Repo is one app repository and where it is deployed.
type Repo struct {
	// Name is owner/repo: the repo's key in the API.
	Name string `json:"name"`
	// URL is where the repo is fetched from: https, http, ssh (or scp-like git@host:path), git or file.
	URL string `json:"url"`
	// Namespace is the Kubernetes namespace its manifests are applied to.
	Namespace string `json:"namespace"`
	// Environment names the deployment target (also the GitHub environment).
	Environment string `json:"environment"`
	// Auth says how to authenticate to the git server; empty means anonymous.
	Auth Auth `json:"auth"`
	// AllowClusterScoped lets the repo apply cluster-scoped objects (Namespace, ClusterRole, CRD, ...).
	AllowClusterScoped bool `json:"allowClusterScoped"`
	// CreateNamespace creates Namespace when it does not exist (default true). deployd
	// labels a namespace it creates with Pod Security "restricted" in warn and audit mode.
	CreateNamespace bool `json:"createNamespace"`
	// EnforcePodSecurity also enforces Pod Security "restricted" in a namespace deployd
	// creates: pods that are not restricted are refused (default false).
	EnforcePodSecurity bool `json:"enforcePodSecurity,omitempty"`
	// ServiceAccount, when set, is impersonated for applying: the API server enforces its RBAC.
	ServiceAccount string `json:"serviceAccount,omitempty"`
	// EnvironmentURL is where the deployed environment can be seen, for GitHub's environment_url.
	EnvironmentURL string `json:"environmentUrl,omitempty"`
	// ProductionEnvironment and TransientEnvironment are passed to GitHub deployments.
	ProductionEnvironment bool `json:"productionEnvironment"`
	TransientEnvironment  bool `json:"transientEnvironment"`
	// PromoteFrom names the environment a commit must have succeeded in, with the same
	// images, before it is deployed here (see promotion.go); empty: no gate.
	PromoteFrom string `json:"promoteFrom,omitempty"`
	// Promotion is how a commit that passed the gate gets here: auto or manual. Set
	// (auto by default) exactly when PromoteFrom is.
	Promotion Promotion `json:"promotion,omitempty"`
	// Values are values files for a Helm chart at Path (repo paths; {environment} is
	// replaced), applied in order after the chart's values.yaml and values-{environment}.yaml.
	Values []string `json:"values,omitempty"`
	// Set are a Helm chart's values applied last, over every values file.
	Set map[string]any `json:"set,omitempty"`
	// ReleaseName is a Helm chart's .Release.Name; empty means the repo's name part.
	ReleaseName string `json:"releaseName,omitempty"`
	// TagDeployments pushes an annotated tag deployment-NNNN (environment/deployment-NNNN
	// when the repo is configured in several environments) on the commit of each
	// deployment that succeeded, failed or ended in error, with the repo's credentials,
	// which need push rights.
	TagDeployments bool `json:"tagDeployments,omitempty"`
	Settings
	// Line is the line in the config file where the repo's entry starts.
	Line int `json:"line"`
}

// Auth names files holding git credentials. The files are read when used, never logged.
type Auth struct {
	// TokenFile holds an HTTPS token, sent as basic auth the way GitHub expects.
	TokenFile string `json:"tokenFile,omitempty"`
	// SSHKeyFile holds an SSH private key for ssh URLs.
	SSHKeyFile string `json:"sshKeyFile,omitempty"`
	// KnownHostsFile holds the known_hosts entries used to check the SSH server's key.
	KnownHostsFile string `json:"knownHostsFile,omitempty"`
}

// Key identifies a repo entry: a repo may be configured once per environment.
type Key struct {
	// Name is the owner/repo name in lower case (GitHub names are case-insensitive).
	Name string
	// Environment is the entry's environment.
	Environment string
}

// String returns "owner/repo@environment".
func (k Key) String() string { return k.Name + "@" + k.Environment }

// Key returns the repo's identity.
func (r Repo) Key() Key {
	return Key{Name: strings.ToLower(r.Name), Environment: r.Environment}
}

// Owner returns the owner part of the repo's name.
func (r Repo) Owner() string { owner, _, _ := strings.Cut(r.Name, "/"); return owner }

// ManifestPath returns Path with {environment} replaced by the repo's environment.
func (r Repo) ManifestPath() string {
	return strings.ReplaceAll(r.Path, "{environment}", r.Environment)
}

var nonName = regexp.MustCompile(`[^a-z0-9-]+`)

// HelmReleaseName is a chart's .Release.Name: ReleaseName, or the repo's name part made
// a valid Kubernetes name (lower case, '-' for what is not a letter or digit).
func (r Repo) HelmReleaseName() string {
	if r.ReleaseName != "" {
		return r.ReleaseName
	}
	_, name, _ := strings.Cut(r.Name, "/")
	return strings.Trim(nonName.ReplaceAllString(strings.ToLower(name), "-"), "-")
}

// StateName names the ConfigMap, in deployd's namespace, that keeps the entry's state
// (inventory, history): readable, unique per (repo, environment), a valid name.
func (r Repo) StateName() string {
	sum := sha256.Sum256([]byte(strings.ToLower(r.Name) + "@" + r.Environment))
	base := nonName.ReplaceAllString(strings.ToLower(strings.ReplaceAll(r.Name, "/", "-"))+"-"+r.Environment, "-")
	if len(base) > 40 {
		base = base[:40]
	}
	return "deployd-" + strings.Trim(base, "-") + "-" + hex.EncodeToString(sum[:4])
}

// LabelValue is the repo's name as a label value: owner.repo.
func (r Repo) LabelValue() string { return strings.Replace(r.Name, "/", ".", 1) }

// Repo returns the entry with the given key, if configured.
func (c *Config) Repo(k Key) (Repo, bool) {
	for _, r := range c.Repos {
		if r.Key() == k {
			return r, true
		}
	}
	return Repo{}, false
}
