// Package history keeps a numbered record of every deployment of a repo and environment,
// in the repo's state ConfigMap in deployd's namespace, so it survives restarts. Writes
// use the ConfigMap's resourceVersion: two writers never lose a record.
package history

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/state"
)

// Phase is where a deployment is.
type Phase string

// The phases.
const (
	Queued          Phase = "queued"
	Applying        Phase = "applying"
	Waiting         Phase = "waiting"
	Succeeded       Phase = "succeeded"
	Failed          Phase = "failed"
	Error           Phase = "error"
	Superseded      Phase = "superseded"
	SkippedNoChange Phase = "skipped-no-change"
	// Blocked is a promotion the gate refused (see promoteFrom): nothing was applied.
	Blocked Phase = "blocked"
)

// Done reports whether the phase is final.
func (p Phase) Done() bool {
	switch p {
	case Queued, Applying, Waiting:
		return false
	}
	return true
}

// Commit describes the deployed commit.
type Commit struct {
	SHA     string    `json:"sha"`
	Message string    `json:"message"`
	Author  string    `json:"author"`
	Time    time.Time `json:"time"`
	// Parents are the SHAs of its parents, as fetched: the history known below it
	// (empty for a root commit, and for records written before deployd kept them).
	Parents []string `json:"parents,omitempty"`
	// Root is set on a commit known to have no parents: its whole history is known.
	Root bool `json:"root,omitempty"`
}

// Object is one object's outcome in a deployment.
type Object struct {
	// Object is "Kind/namespace/name".
	Object string `json:"object"`
	// APIVersion, Kind, Namespace and Name identify it.
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name,omitempty"`
	// Action is what the apply did: created, configured, unchanged, recreated, pruned.
	Action string `json:"action"`
	// Status is the rollout status when the deployment ended (kstatus).
	Status string `json:"status,omitempty"`
	// Message explains the status.
	Message string `json:"message,omitempty"`
}

// Record is one deployment.
type Record struct {
	// Number counts the repo and environment's deployments from 1.
	Number int `json:"number"`
	// Commit is what was deployed.
	Commit Commit `json:"commit"`
	// Tree is the hash of the manifests tree at Commit.
	Tree string `json:"tree"`
	// Trigger says what started it: poll, webhook, api, startup, rollback, github-deployment.
	Trigger string `json:"trigger"`
	// Started and Ended bound it; Ended is zero while it runs.
	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended,omitzero"`
	// Phase is where it is or how it ended.
	Phase Phase `json:"phase"`
	// Error says what went wrong, for failed and error phases.
	Error string `json:"error,omitempty"`
	// Objects are the per-object outcomes.
	Objects []Object `json:"objects,omitempty"`
	// Images are the distinct container images the commit's manifests rendered to (every
	// container and init container of every pod template), sorted; a promotion compares them.
	Images []string `json:"images,omitempty"`
	// ImagesRecorded tells Images is known (it may be empty): false for records of an
	// older deployd, of a render that failed, or over render.MaxImages.
	ImagesRecorded bool `json:"imagesRecorded,omitempty"`
	// Note says something unusual about the deployment, e.g. a commit off the configured branch.
	Note string `json:"note,omitempty"`
	// Renderer is how the manifests were rendered: plain, kustomize or helm; empty
	// before the render and in records older than the field.
	Renderer string `json:"renderer,omitempty"`
	// Chart is the Helm chart rendered, when Renderer is helm.
	Chart Chart `json:"chart,omitzero"`
	// Crashes counts the times deployd was killed (crashed, OOM-killed) while deploying
	// this commit, over this record and the startup redos before it. At two, the commit
	// is not redone again at start (see deploy.Runner.Recover).
	Crashes int `json:"crashes,omitempty"`
	// Stopped is set on an unfinished record that deployd's graceful shutdown left
	// behind: its redo at the next start does not count as a crash.
	Stopped bool `json:"stopped,omitempty"`
	// GitHub is the GitHub deployment it is reported on; kept apart in the ConfigMap
	// (see SetGitHub) so the reporter and the deployment never overwrite each other.
	GitHub *GitHub `json:"-"`
	// Tag is where the deployment's git tag is, for repos that ask for tags (see package
	// tag); kept apart in the ConfigMap (see SetTag), like GitHub.
	Tag *Tag `json:"-"`
}

// Tag is where a deployment's git tag is.
type Tag struct {
	// Name is the tag's name, e.g. production/deployment-0007.
	Name string `json:"name"`
	// State is pending, pushed or failed.
	State string `json:"state"`
	// Error is the last attempt's error, empty once pushed.
	Error string `json:"error,omitempty"`
	// Attempts counts the pushes tried.
	Attempts int `json:"attempts,omitempty"`
}

// Chart names a Helm chart and its version.
type Chart struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// GitHub is the GitHub deployment a record is reported on.
type GitHub struct {
	DeploymentID int64  `json:"id"`
	State        string `json:"state"`
}

// Clone returns a copy that shares no memory with r.
func (r Record) Clone() Record {
	r.Objects = append([]Object(nil), r.Objects...)
	r.Images = append([]string(nil), r.Images...)
	return r
}

// Name is the record's display name: deployment-0001.
func (r Record) Name() string { return fmt.Sprintf("deployment-%04d", r.Number) }

// Data keys in the state ConfigMap.
const (
	githubKey  = "github"
	tagsKey    = "tags"
	historyKey = "history"
	nextKey    = "next"
)

// maxBytes keeps the history well inside a ConfigMap's 1 MiB, with room for the inventory.
const maxBytes = 600 << 10

// Store reads and writes records.
type Store struct {
	states *state.Store
	keep   int
}

// NewStore keeps the newest keep records per repo and environment in states' ConfigMaps.
func NewStore(states *state.Store, keep int) *Store {
	return &Store{states: states, keep: keep}
}

type stored struct {
	records []Record // oldest first
	next    int
	pause   string
	github  map[int]GitHub
	tags    map[int]Tag
}

func (s *Store) load(ctx context.Context, repo config.Repo) (*stored, error) {
	cm, err := s.states.Get(ctx, repo.StateName())
	if err != nil {
		return nil, fmt.Errorf("reading history: %w", err)
	}
	if cm == nil {
		return &stored{next: 1}, nil
	}
	return s.parse(repo, cm.Data)
}

func (s *Store) parse(repo config.Repo, data map[string]string) (*stored, error) {
	name := "ConfigMap/" + s.states.Namespace() + "/" + repo.StateName()
	st := &stored{next: 1}
	if raw := data[historyKey]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &st.records); err != nil {
			return nil, fmt.Errorf("history in %s is not valid: %w", name, err)
		}
	}
	st.pause = data[pauseKey]
	if raw := data[githubKey]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &st.github); err != nil {
			return nil, fmt.Errorf("GitHub state in %s is not valid: %w", name, err)
		}
	}
	if raw := data[tagsKey]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &st.tags); err != nil {
			return nil, fmt.Errorf("tag state in %s is not valid: %w", name, err)
		}
	}
	for i := range st.records {
		if g, ok := st.github[st.records[i].Number]; ok {
			st.records[i].GitHub = &g
		}
		if t, ok := st.tags[st.records[i].Number]; ok {
			st.records[i].Tag = &t
		}
	}
	if n, err := strconv.Atoi(data[nextKey]); err == nil {
		st.next = n
	}
	for _, r := range st.records {
		st.next = max(st.next, r.Number+1)
	}
	return st, nil
}

// Meta is the labels and annotations of a repo's state ConfigMap.
func Meta(repo config.Repo) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Labels:      map[string]string{"app.kubernetes.io/managed-by": "deployd", "deployd.dev/repo": repo.LabelValue(), "deployd.dev/environment": repo.Environment},
		Annotations: map[string]string{"deployd.dev/repo-name": repo.Name, "deployd.dev/environment": repo.Environment},
	}
}

// modify applies change to the stored records and writes them back; the state store
// retries it on a conflicting write by another deployd.
func (s *Store) modify(ctx context.Context, repo config.Repo, change func(st *stored) error) error {
	err := s.states.Modify(ctx, repo.StateName(), Meta(repo), func(data map[string]string) error {
		st, err := s.parse(repo, data)
		if err != nil {
			return err
		}
		if err := change(st); err != nil {
			return err
		}
		raw, err := s.trim(st)
		if err != nil {
			return err
		}
		data[historyKey], data[nextKey] = raw, strconv.Itoa(st.next)
		if st.pause != "" {
			data[pauseKey] = st.pause
		}
		if len(st.github) > 0 {
			kept := map[int]GitHub{}
			for _, r := range st.records {
				if g, ok := st.github[r.Number]; ok {
					kept[r.Number] = g
				}
			}
			b, _ := json.Marshal(kept)
			data[githubKey] = string(b)
		}
		if len(st.tags) > 0 {
			kept := map[int]Tag{}
			for _, r := range st.records {
				if t, ok := st.tags[r.Number]; ok {
					kept[r.Number] = t
				}
			}
			b, _ := json.Marshal(kept)
			data[tagsKey] = string(b)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("writing history: %w", err)
	}
	return nil
}

// trim drops the oldest records beyond keep or the size bound, and encodes the rest.
func (s *Store) trim(st *stored) (string, error) {
	if len(st.records) > s.keep {
		st.records = st.records[len(st.records)-s.keep:]
	}
	for {
		raw, err := json.Marshal(st.records)
		if err != nil {
			return "", err
		}
		if len(raw) <= maxBytes || len(st.records) <= 1 {
			return string(raw), nil
		}
		st.records = st.records[1:]
	}
}

// Create stores rec as the next deployment, returning it with its number.
func (s *Store) Create(ctx context.Context, repo config.Repo, rec Record) (Record, error) {
	err := s.modify(ctx, repo, func(st *stored) error {
		rec.Number = st.next
		st.next++
		st.records = append(st.records, rec)
		return nil
	})
	return rec, err
}

// Update replaces the record with rec's number (a record already trimmed away is not re-added).
func (s *Store) Update(ctx context.Context, repo config.Repo, rec Record) error {
	return s.modify(ctx, repo, func(st *stored) error {
		for i := range st.records {
			if st.records[i].Number == rec.Number {
				st.records[i] = rec
			}
		}
		return nil
	})
}

// List returns the records, newest first.
func (s *Store) List(ctx context.Context, repo config.Repo) ([]Record, error) {
	st, err := s.load(ctx, repo)
	if err != nil {
		return nil, err
	}
	out := make([]Record, len(st.records))
	for i, r := range st.records {
		out[len(st.records)-1-i] = r
	}
	return out, nil
}

// Next returns the number the next deployment will get.
func (s *Store) Next(ctx context.Context, repo config.Repo) (int, error) {
	st, err := s.load(ctx, repo)
	if err != nil {
		return 0, err
	}
	return st.next, nil
}

// pauseKey holds the repo's pause state in the state ConfigMap.
const pauseKey = "pause"

// Pause is a repo's stored pause state.
type Pause struct {
	Paused bool      `json:"paused"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since,omitzero"`
}

// SetPause stores the pause state, so it survives restarts.
func (s *Store) SetPause(ctx context.Context, repo config.Repo, p Pause) error {
	return s.modify(ctx, repo, func(st *stored) error {
		raw, err := json.Marshal(p)
		if err != nil {
			return err
		}
		st.pause = string(raw)
		return nil
	})
}

// Pause reads the stored pause state.
func (s *Store) Pause(ctx context.Context, repo config.Repo) (Pause, error) {
	st, err := s.load(ctx, repo)
	if err != nil {
		return Pause{}, err
	}
	var p Pause
	if st.pause != "" {
		if err := json.Unmarshal([]byte(st.pause), &p); err != nil {
			return Pause{}, fmt.Errorf("pause state of %s is not valid: %w", repo.Name, err)
		}
	}
	return p, nil
}

// SetTag records where a record's git tag is.
func (s *Store) SetTag(ctx context.Context, repo config.Repo, number int, t Tag) error {
	return s.modify(ctx, repo, func(st *stored) error {
		if st.tags == nil {
			st.tags = map[int]Tag{}
		}
		t.Error = truncate(t.Error, maxTagError)
		st.tags[number] = t
		return nil
	})
}

// maxTagError bounds a stored tag error: a git server's refusal is its own text.
const maxTagError = 1000

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// SetGitHub records the GitHub deployment a record is reported on, and its last state.
func (s *Store) SetGitHub(ctx context.Context, repo config.Repo, number int, g GitHub) error {
	return s.modify(ctx, repo, func(st *stored) error {
		if st.github == nil {
			st.github = map[int]GitHub{}
		}
		st.github[number] = g
		return nil
	})
}
