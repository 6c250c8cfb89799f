package api

import "time"

// Phase of a deployment.
type Phase string

// Replicas are a workload's replica counts.
type Replicas struct {
	Desired   int64 `json:"desired" doc:"Replicas the spec asks for."`
	Updated   int64 `json:"updated" doc:"Replicas running the latest pod template."`
	Ready     int64 `json:"ready" doc:"Replicas passing their readiness probe."`
	Available int64 `json:"available" doc:"Replicas ready for at least minReadySeconds."`
}

// Object is one applied object and its rollout status.
type Object struct {
	APIVersion string       `json:"apiVersion" doc:"The object's apiVersion, e.g. apps/v1."`
	Kind       string       `json:"kind" doc:"The object's kind, e.g. Deployment."`
	Namespace  string       `json:"namespace,omitempty" doc:"The object's namespace; empty for cluster-scoped objects."`
	Name       string       `json:"name" doc:"The object's name."`
	Status     string       `json:"status" enum:"Current,InProgress,Failed,Terminating,NotFound,Unknown" doc:"Rollout status, as kstatus computes it."`
	Message    string       `json:"message,omitempty" doc:"Why the object has its status, e.g. '2 of 3 updated replicas available'."`
	Replicas   *Replicas    `json:"replicas,omitempty" doc:"Replica counts, for Deployments, StatefulSets and DaemonSets."`
	Images     []string     `json:"images,omitempty" doc:"Images of the object's pod template containers."`
	Changed    time.Time    `json:"changed,omitzero" doc:"When the status last changed, as seen by deployd."`
	AgeSeconds int64        `json:"ageSeconds" doc:"Seconds since the status last changed."`
	Drift      *ObjectDrift `json:"drift,omitempty" doc:"Set when the object no longer matches what deployd applied."`
}

// ObjectDrift is how an applied object drifted from what deployd applied.
type ObjectDrift struct {
	Deleted bool         `json:"deleted" doc:"The object was deleted from the cluster."`
	Fields  []DriftField `json:"fields" nullable:"false" doc:"The fields deployd applied that another writer changed, took over or removed (at most 20)."`
}

// DriftField is one drifted field.
type DriftField struct {
	Path    string `json:"path" doc:"The field's path, e.g. .spec.replicas or .data.key."`
	Manager string `json:"manager,omitempty" doc:"The field manager that changed it, e.g. kubectl or kube-controller-manager."`
}

// Commit is a git commit.
type Commit struct {
	SHA     string    `json:"sha" doc:"The commit's SHA."`
	Message string    `json:"message,omitempty" doc:"First line of the commit message."`
	Author  string    `json:"author,omitempty" doc:"The commit author's name."`
	Time    time.Time `json:"time,omitzero" doc:"The commit's author time."`
}

// ObjectOutcome is one object's outcome in a deployment.
type ObjectOutcome struct {
	Object  string `json:"object" doc:"Kind/namespace/name."`
	Action  string `json:"action" enum:"created,configured,unchanged,recreated,pruned,prune skipped" doc:"What the apply did to the object."`
	Status  string `json:"status,omitempty" doc:"The object's rollout status when the deployment ended."`
	Message string `json:"message,omitempty" doc:"Detail of the status, or why a prune was skipped."`
}

// Chart is a Helm chart's name and version (from its Chart.yaml).
type Chart struct {
	Name    string `json:"name" doc:"The chart's name."`
	Version string `json:"version" doc:"The chart's version."`
}

// Record is one deployment.
type Record struct {
	Number  int             `json:"number" doc:"The deployment's number, counted per repo and environment from 1."`
	Name    string          `json:"name" doc:"The deployment's display name, e.g. deployment-0007."`
	Commit  Commit          `json:"commit" doc:"The deployed commit."`
	Trigger string          `json:"trigger" enum:"startup,poll,webhook,api,config,rollback,github-deployment,drift,promote,auto-promote" doc:"What started the deployment."`
	Started time.Time       `json:"started" doc:"When the deployment started."`
	Ended   time.Time       `json:"ended,omitzero" doc:"When it ended; absent while it runs."`
	Phase   string          `json:"phase" enum:"queued,applying,waiting,succeeded,failed,error,superseded,skipped-no-change,blocked" doc:"Where the deployment is, or how it ended."`
	Error   string          `json:"error,omitempty" doc:"What went wrong, for failed and error phases."`
	Objects []ObjectOutcome `json:"objects,omitempty" doc:"Each object's outcome."`
	Note    string          `json:"note,omitempty" doc:"Something unusual about the deployment, e.g. a GitHub deployment of a commit off the configured branch."`
	Images  []string        `json:"images,omitempty" doc:"The distinct container images the commit rendered to (containers and init containers of every pod template); a promotion compares them."`
	// How the manifests were rendered.
	Renderer string `json:"renderer,omitempty" enum:"plain,kustomize,helm" doc:"How the manifests were rendered: plain YAML files, a kustomization or a Helm chart; absent before the render."`
	Chart    *Chart `json:"chart,omitempty" doc:"The Helm chart rendered, when the renderer is helm."`
	// GitHub reporting.
	GitHubDeploymentID int64      `json:"githubDeploymentId,omitempty" doc:"The GitHub deployment this deployment is reported on."`
	GitHubState        string     `json:"githubState,omitempty" enum:"queued,in_progress,success,failure,error,inactive" doc:"The last state reported to GitHub."`
	Tag                *RecordTag `json:"tag,omitempty" doc:"The git tag pushed on the deployed commit, for repos with tagDeployments (retries are shown by the leader pushing it; its start and end are stored, for every replica)."`
}

// RecordTag is where a deployment's git tag is.
type RecordTag struct {
	Name     string `json:"name" doc:"The tag's name, e.g. deployment-0007 or production/deployment-0007."`
	State    string `json:"state" enum:"pending,pushed,failed" doc:"pending while it is being pushed (retried with backoff), pushed, or failed once given up on."`
	Error    string `json:"error,omitempty" doc:"Why the last push failed; tagging never fails the deployment."`
	Attempts int    `json:"attempts" doc:"Pushes tried so far."`
}

// Environment is a repo's state in one environment.
type Environment struct {
	Environment    string           `json:"environment" doc:"The environment's name."`
	Namespace      string           `json:"namespace" doc:"The namespace the repo's manifests are applied to."`
	Branch         string           `json:"branch" doc:"The deployed branch."`
	Path           string           `json:"path" doc:"The manifests path in the repo."`
	ObservedCommit *Commit          `json:"observedCommit,omitempty" doc:"The branch head deployd last saw."`
	CheckError     string           `json:"checkError,omitempty" doc:"Why the last check of the repo failed, if it did."`
	DeployedCommit string           `json:"deployedCommit,omitempty" doc:"The SHA of the commit whose manifests are applied."`
	Phase          string           `json:"phase" enum:"none,queued,applying,waiting,succeeded,failed,error,superseded,skipped-no-change,blocked" doc:"The phase of the newest deployment; none before the first."`
	Paused         bool             `json:"paused" doc:"A paused repo is watched but not deployed."`
	PauseReason    string           `json:"pauseReason,omitempty" doc:"Why the repo is paused."`
	Current        *Record          `json:"current,omitempty" doc:"The newest deployment record."`
	Rollout        string           `json:"rollout" enum:"Current,InProgress,Failed,Terminating,NotFound,Unknown" doc:"Overall rollout status: the least healthy of the objects'."`
	Objects        []Object         `json:"objects" nullable:"false" doc:"The applied objects of the deployed record, with their live status."`
	InSync         bool             `json:"inSync" doc:"False while an applied object no longer matches what deployd applied (a field changed by another writer, or the object deleted)."`
	DriftReason    string           `json:"driftReason,omitempty" doc:"Why drift is not corrected at once: 'fighting with <manager>' (corrections back off), or the repo is paused."`
	Promotion      *PromotionStatus `json:"promotion,omitempty" doc:"Set when the environment promotes from another (promoteFrom in repos.yaml)."`
}

// PromotionStatus is where an environment with promoteFrom stands.
type PromotionStatus struct {
	From          string    `json:"from" doc:"The environment commits must succeed in first."`
	Mode          string    `json:"mode" enum:"auto,manual" doc:"auto deploys a commit once it succeeded there; manual waits for a promotion request."`
	WaitingCommit string    `json:"waitingCommit,omitempty" doc:"The commit waiting to be promoted here, if any."`
	Reason        string    `json:"reason,omitempty" doc:"What the waiting commit waits for."`
	Ready         bool      `json:"ready" doc:"The source environment succeeded with the waiting commit: a promotion request would deploy it, if its images match."`
	Since         time.Time `json:"since,omitzero" doc:"Since when the commit waits."`
}

// RepoStatus is a repo in every environment.
type RepoStatus struct {
	Repo         string        `json:"repo" doc:"owner/repo."`
	URL          string        `json:"url" doc:"Where deployd fetches the repo from."`
	Environments []Environment `json:"environments" nullable:"false" doc:"The repo's state per environment."`
}

// Summary is one line of GET /deployments.
type Summary struct {
	Repo           string `json:"repo" doc:"owner/repo."`
	Environment    string `json:"environment" doc:"The environment."`
	Namespace      string `json:"namespace" doc:"The target namespace."`
	Phase          string `json:"phase" enum:"none,queued,applying,waiting,succeeded,failed,error,superseded,skipped-no-change,blocked" doc:"The newest deployment's phase."`
	Rollout        string `json:"rollout" enum:"Current,InProgress,Failed,Terminating,NotFound,Unknown" doc:"Overall rollout status."`
	DeployedCommit string `json:"deployedCommit,omitempty" doc:"The SHA whose manifests are applied."`
	Number         int    `json:"number,omitempty" doc:"The newest deployment's number."`
	Paused         bool   `json:"paused" doc:"Whether the repo is paused."`
	InSync         bool   `json:"inSync" doc:"False while an applied object drifted from what deployd applied."`
}

// ConfigRepo is one repo entry of the config in force, defaults applied.
type ConfigRepo struct {
	Name               string `json:"name" doc:"owner/repo."`
	URL                string `json:"url" doc:"Where the repo is fetched from."`
	Namespace          string `json:"namespace" doc:"The namespace its manifests are applied to."`
	Environment        string `json:"environment" doc:"The environment."`
	Branch             string `json:"branch" doc:"The deployed branch."`
	Path               string `json:"path" doc:"The manifests path, {environment} replaced."`
	Interval           string `json:"interval" doc:"Polling interval as a Go duration; 0s means webhooks only."`
	Timeout            string `json:"timeout" doc:"How long a rollout may take, as a Go duration."`
	Prune              bool   `json:"prune" doc:"Whether objects that left the manifests are deleted."`
	AllowClusterScoped bool   `json:"allowClusterScoped" doc:"Whether the repo may apply cluster-scoped objects."`
	CreateNamespace    bool   `json:"createNamespace" doc:"Whether a missing namespace is created."`
	ServiceAccount     string `json:"serviceAccount,omitempty" doc:"The ServiceAccount impersonated for applying, if any."`
	Auth               string `json:"auth" enum:"none,token,ssh" doc:"How deployd authenticates to the git server (the credentials are never shown)."`
}
