package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/controller"
	"github.com/deployd/deployd/internal/history"
	"github.com/deployd/deployd/internal/source"
	"github.com/deployd/deployd/internal/view"
)

// RepoPath are the path parameters naming a repo (exported: huma reads only exported embedded structs).
type RepoPath struct {
	Owner         string `path:"owner" maxLength:"39" doc:"The repo's owner, as on GitHub."`
	Repo          string `path:"repo" maxLength:"100" doc:"The repo's name."`
	Authorization string `header:"Authorization" doc:"Bearer token; needed for writes, and for reads when deployd runs with --api-read-auth."`
}

type statusInput struct {
	RepoPath
	Environment string `query:"environment" maxLength:"63" doc:"Only this environment."`
}

type statusOutput struct {
	Body RepoStatus
}

type historyInput struct {
	RepoPath
	Environment string `query:"environment" maxLength:"63" doc:"The environment; needed when the repo has several."`
	Page        int    `query:"page" minimum:"1" default:"1" doc:"Page number, from 1."`
	PerPage     int    `query:"perPage" minimum:"1" maximum:"100" default:"20" doc:"Records per page."`
}

type historyOutput struct {
	Body struct {
		Environment string   `json:"environment" doc:"The environment the records belong to."`
		Total       int      `json:"total" doc:"How many records deployd keeps for it."`
		Page        int      `json:"page" doc:"This page's number."`
		PerPage     int      `json:"perPage" doc:"Records per page."`
		Records     []Record `json:"records" nullable:"false" doc:"The page's records, newest first."`
	}
}

type recordInput struct {
	RepoPath
	Environment string `query:"environment" maxLength:"63" doc:"The environment; needed when the repo has several."`
	Number      int    `path:"number" minimum:"1" doc:"The deployment's number."`
}

type recordOutput struct {
	Body Record
}

type objectInput struct {
	RepoPath
	Environment string `query:"environment" maxLength:"63" doc:"The environment; needed when the repo has several."`
	Kind        string `path:"kind" maxLength:"63" doc:"The object's kind, e.g. Deployment (case-insensitive)."`
	Name        string `path:"name" maxLength:"253" doc:"The object's name."`
}

type objectOutput struct {
	Body map[string]any
}

type listInput struct {
	Authorization string `header:"Authorization" doc:"Bearer token, when deployd runs with --api-read-auth."`
	Phase         string `query:"phase" enum:"none,queued,applying,waiting,succeeded,failed,error,superseded,skipped-no-change" doc:"Only repos whose newest deployment is in this phase."`
}

type listOutput struct {
	Body struct {
		Deployments []Summary `json:"deployments" nullable:"false" doc:"One line per repo and environment."`
	}
}

type syncInput struct {
	RepoPath
	Environment string `query:"environment" maxLength:"63" doc:"The environment; needed when the repo has several."`
	Force       bool   `query:"force" doc:"Deploy even when the manifests did not change."`
}

type syncOutput struct {
	Status int
	Body   struct {
		Message string `json:"message" doc:"What was queued."`
		Number  int    `json:"number" doc:"The number the deployment will have, if the check leads to one."`
	}
}

type pauseInput struct {
	RepoPath
	Environment string `query:"environment" maxLength:"63" doc:"The environment; needed when the repo has several."`
	Reason      string `query:"reason" maxLength:"200" doc:"Why the repo is paused, shown in its status."`
}

type pauseOutput struct {
	Body struct {
		Environment string `json:"environment" doc:"The environment."`
		Paused      bool   `json:"paused" doc:"Whether the repo is now paused."`
		Reason      string `json:"reason,omitempty" doc:"Why."`
	}
}

type rollbackInput struct {
	RepoPath
	Environment string `query:"environment" maxLength:"63" doc:"The environment; needed when the repo has several."`
	To          int    `query:"to" required:"true" minimum:"1" doc:"The number of the earlier successful deployment whose commit to deploy again."`
}

type rollbackOutput struct {
	Status int
	Body   struct {
		Message     string `json:"message" doc:"What was queued."`
		Number      int    `json:"number" doc:"The number the rollback deployment will have."`
		Commit      string `json:"commit" doc:"The commit deployed again."`
		Paused      bool   `json:"paused" doc:"The repo is paused, so the next push does not undo the rollback; resume it when ready."`
		PauseReason string `json:"pauseReason" doc:"Why it is paused."`
	}
}

type configInput struct {
	Authorization string `header:"Authorization" doc:"Bearer token, when deployd runs with --api-read-auth."`
}

type configOutput struct {
	Body struct {
		File        string       `json:"file" doc:"The config file's path."`
		LoadedAt    time.Time    `json:"loadedAt" doc:"When the config in force was read."`
		Repos       []ConfigRepo `json:"repos" nullable:"false" doc:"The repos in force, with defaults applied."`
		ReloadError string       `json:"reloadError,omitempty" doc:"Why the last reload was refused; the config above stays in force."`
		ReloadAt    time.Time    `json:"reloadErrorAt,omitzero" doc:"When the last reload was refused."`
	}
}

var readErrors = []int{http.StatusUnauthorized, http.StatusNotFound}

func (s *Server) register() {
	tags := []string{"deployments"}
	huma.Register(s.api, huma.Operation{OperationID: "get-deployment", Method: http.MethodGet, Path: "/deployment/{owner}/{repo}",
		Summary: "What a repo runs", Description: "The repo in each environment: commits, phase, current record and every applied object with its live rollout status. Served from memory.",
		Tags: tags, Errors: readErrors}, s.getDeployment)
	huma.Register(s.api, huma.Operation{OperationID: "list-history", Method: http.MethodGet, Path: "/deployment/{owner}/{repo}/history",
		Summary: "A repo's deployments", Description: "Deployment records, newest first, paged.", Tags: tags, Errors: append(readErrors, http.StatusBadRequest)}, s.listHistory)
	huma.Register(s.api, huma.Operation{OperationID: "get-history-record", Method: http.MethodGet, Path: "/deployment/{owner}/{repo}/history/{number}",
		Summary: "One deployment", Tags: tags, Errors: append(readErrors, http.StatusBadRequest)}, s.getRecord)
	huma.Register(s.api, huma.Operation{OperationID: "get-object", Method: http.MethodGet, Path: "/deployment/{owner}/{repo}/objects/{kind}/{name}",
		Summary: "A live object", Description: "An object deployd applied for the repo, as the cluster has it now, without managedFields. Secret values are replaced by <redacted>; so are ConfigMap data and binaryData values and containers' env values, unless the request carries the API token.",
		Tags: tags, Errors: append(readErrors, http.StatusBadRequest, http.StatusBadGateway)}, s.getObject)
	huma.Register(s.api, huma.Operation{OperationID: "list-deployments", Method: http.MethodGet, Path: "/deployments",
		Summary: "Every repo and environment", Tags: tags, Errors: []int{http.StatusUnauthorized}}, s.listDeployments)
	write := []map[string][]string{{"bearer": {}}}
	huma.Register(s.api, huma.Operation{OperationID: "sync", Method: http.MethodPost, Path: "/deployment/{owner}/{repo}/sync", DefaultStatus: http.StatusAccepted,
		Summary: "Check and deploy a repo now", Description: "Queues a check of the repo; with force, deploys even unchanged manifests.",
		Tags: tags, Security: write, Errors: []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound, http.StatusConflict, http.StatusServiceUnavailable}}, s.sync)
	huma.Register(s.api, huma.Operation{OperationID: "pause", Method: http.MethodPost, Path: "/deployment/{owner}/{repo}/pause",
		Summary: "Pause a repo", Description: "A paused repo is still watched and its status served, but nothing is deployed until it is resumed. Survives restarts.",
		Tags: tags, Security: write, Errors: []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound}}, s.pause(true))
	huma.Register(s.api, huma.Operation{OperationID: "resume", Method: http.MethodPost, Path: "/deployment/{owner}/{repo}/resume",
		Summary: "Resume a paused repo", Tags: tags, Security: write, Errors: []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound}}, s.pause(false))
	huma.Register(s.api, huma.Operation{OperationID: "rollback", Method: http.MethodPost, Path: "/deployment/{owner}/{repo}/rollback", DefaultStatus: http.StatusAccepted,
		Summary:     "Deploy an earlier commit again",
		Description: "Deploys the commit of an earlier successful deployment as a new one (trigger rollback), and pauses the repo so the next push does not undo it.",
		Tags:        tags, Security: write, Errors: []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound, http.StatusConflict, http.StatusServiceUnavailable}}, s.rollback)
	s.registerPromote()
	huma.Register(s.api, huma.Operation{OperationID: "get-config", Method: http.MethodGet, Path: "/config",
		Summary: "The config in force", Description: "The effective repos.yaml, with the error of the last refused reload.", Tags: []string{"deployd"}, Errors: []int{http.StatusUnauthorized}}, s.getConfig)
}

func (s *Server) getDeployment(ctx context.Context, in *statusInput) (*statusOutput, error) {
	es, err := s.entries(in.Owner, in.Repo, in.Environment)
	if err != nil {
		return nil, err
	}
	return &statusOutput{Body: s.status(es, time.Now())}, nil
}

// status is a repo's answer to GET /deployment/{owner}/{repo}.
func (s *Server) status(es []view.Entry, now time.Time) RepoStatus {
	out := RepoStatus{Repo: es[0].Repo.Name, URL: es[0].Repo.URL}
	for _, e := range sortedEnvs(es) {
		out.Environments = append(out.Environments, s.environment(e, now))
	}
	return out
}

func (s *Server) listHistory(ctx context.Context, in *historyInput) (*historyOutput, error) {
	e, err := s.one(in.Owner, in.Repo, in.Environment)
	if err != nil {
		return nil, err
	}
	out := &historyOutput{}
	out.Body.Environment, out.Body.Total, out.Body.Page, out.Body.PerPage = e.Repo.Environment, len(e.Records), in.Page, in.PerPage
	out.Body.Records = []Record{}
	for i := (in.Page - 1) * in.PerPage; i < len(e.Records) && i < in.Page*in.PerPage; i++ {
		out.Body.Records = append(out.Body.Records, recordOf(e.Records[i]))
	}
	return out, nil
}

func (s *Server) getRecord(ctx context.Context, in *recordInput) (*recordOutput, error) {
	e, err := s.one(in.Owner, in.Repo, in.Environment)
	if err != nil {
		return nil, err
	}
	for _, r := range e.Records {
		if r.Number == in.Number {
			return &recordOutput{Body: recordOf(r)}, nil
		}
	}
	return nil, huma.Error404NotFound(historyName(in.Number) + " is not in the kept history of " + e.Repo.Name + " (" + e.Repo.Environment + ")")
}

func historyName(n int) string { return history.Record{Number: n}.Name() }

func (s *Server) getObject(ctx context.Context, in *objectInput) (*objectOutput, error) {
	e, err := s.one(in.Owner, in.Repo, in.Environment)
	if err != nil {
		return nil, err
	}
	dep, ok := e.Deployed()
	if ok {
		for _, o := range dep.Objects {
			if !strings.EqualFold(o.Kind, in.Kind) || o.Name != in.Name || o.Action == "pruned" {
				continue
			}
			live, err := s.deps.Objects.Live(ctx, RefOf(o))
			if apierrors.IsNotFound(err) {
				return nil, huma.Error404NotFound(o.Object + " is in the deployment but not in the cluster")
			}
			if err != nil {
				return nil, s.badGateway(e.Repo, "reading "+o.Object+" from the cluster", err)
			}
			// The token's holder may see configuration values; anyone who may only read,
			// which is anyone unless --api-read-auth, sees their names.
			values := s.authorize(in.Authorization, true) == nil
			return &objectOutput{Body: Redact(live.Object, values)}, nil
		}
	}
	return nil, huma.Error404NotFound("deployd applied no " + in.Kind + " named " + in.Name + " for " + e.Repo.Name + " (" + e.Repo.Environment + ")")
}

func (s *Server) listDeployments(ctx context.Context, in *listInput) (*listOutput, error) {
	out := &listOutput{}
	out.Body.Deployments = []Summary{}
	now := time.Now()
	for _, e := range s.deps.View.Entries("") {
		env := s.environment(e, now)
		if in.Phase != "" && env.Phase != in.Phase {
			continue
		}
		sum := Summary{Repo: e.Repo.Name, Environment: env.Environment, Namespace: env.Namespace, Phase: env.Phase, Rollout: env.Rollout,
			DeployedCommit: env.DeployedCommit, Paused: env.Paused, InSync: env.InSync}
		if env.Current != nil {
			sum.Number = env.Current.Number
		}
		out.Body.Deployments = append(out.Body.Deployments, sum)
	}
	return out, nil
}

func (s *Server) sync(ctx context.Context, in *syncInput) (*syncOutput, error) {
	e, err := s.one(in.Owner, in.Repo, in.Environment)
	if err != nil {
		return nil, err
	}
	if e.Pause.Paused {
		return nil, huma.Error409Conflict(e.Repo.Name + " (" + e.Repo.Environment + ") is paused (" + e.Pause.Reason + "): resume it first")
	}
	if err := s.enqueue(ctx, e, controller.Request{Trigger: controller.TriggerAPI, Force: in.Force}); err != nil {
		return nil, err
	}
	out := &syncOutput{Status: http.StatusAccepted}
	out.Body.Number = 1
	if cur, ok := e.Current(); ok {
		out.Body.Number = cur.Number + 1
	}
	out.Body.Message = "check of " + e.Repo.Name + " (" + e.Repo.Environment + ") queued"
	if in.Force {
		out.Body.Message = "forced deployment of " + e.Repo.Name + " (" + e.Repo.Environment + ") queued"
	}
	return out, nil
}

func (s *Server) pause(paused bool) func(context.Context, *pauseInput) (*pauseOutput, error) {
	return func(ctx context.Context, in *pauseInput) (*pauseOutput, error) {
		e, err := s.one(in.Owner, in.Repo, in.Environment)
		if err != nil {
			return nil, err
		}
		p := view.Pause{}
		if paused {
			p = view.Pause{Paused: true, Reason: in.Reason, Since: time.Now().UTC()}
			if p.Reason == "" {
				p.Reason = "paused through the API"
			}
		}
		if err := s.deps.Pauser.SetPause(ctx, e.Repo, p); err != nil {
			return nil, s.badGateway(e.Repo, "storing the pause state in the cluster", err)
		}
		out := &pauseOutput{}
		out.Body.Environment, out.Body.Paused, out.Body.Reason = e.Repo.Environment, p.Paused, p.Reason
		return out, nil
	}
}

func (s *Server) getConfig(ctx context.Context, in *configInput) (*configOutput, error) {
	st := s.deps.Config.State()
	out := &configOutput{}
	out.Body.File, out.Body.LoadedAt, out.Body.Repos = st.Config.File, st.LoadedAt, []ConfigRepo{}
	for _, r := range st.Config.Repos {
		auth := "none"
		switch {
		case r.Auth.TokenFile != "":
			auth = "token"
		case r.Auth.SSHKeyFile != "":
			auth = "ssh"
		}
		out.Body.Repos = append(out.Body.Repos, ConfigRepo{Name: r.Name, URL: r.URL, Namespace: r.Namespace, Environment: r.Environment,
			Branch: r.Branch, Path: r.ManifestPath(), Interval: r.Interval.String(), Timeout: r.Timeout.String(), Prune: r.Prune,
			AllowClusterScoped: r.AllowClusterScoped, CreateNamespace: r.CreateNamespace, ServiceAccount: r.ServiceAccount, Auth: auth})
	}
	if st.Err != nil {
		out.Body.ReloadError, out.Body.ReloadAt = st.Err.Error(), st.ErrAt
	}
	return out, nil
}

// redacted replaces a value the reader may not see.
const redacted = "<redacted>"

// Redact returns a copy of obj without managedFields and kubectl's last-applied copy
// (which holds every value in clear), with every Secret value replaced by "<redacted>";
// unless values is set, ConfigMap data and binaryData values and the env values of every
// container (init and ephemeral ones too, in any pod template, custom resources
// included) are replaced as well.
func Redact(obj map[string]any, values bool) map[string]any {
	b, _ := json.Marshal(obj)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	if md, ok := out["metadata"].(map[string]any); ok {
		delete(md, "managedFields")
		if ann, ok := md["annotations"].(map[string]any); ok {
			delete(ann, "kubectl.kubernetes.io/last-applied-configuration")
		}
	}
	core := out["apiVersion"] == "v1"
	switch {
	case core && out["kind"] == "Secret":
		redactValues(out, "data", "stringData")
	case core && out["kind"] == "ConfigMap" && !values:
		redactValues(out, "data", "binaryData")
	}
	if !values {
		redactEnv(out)
	}
	return out
}

// redactValues replaces the values of the maps at fields.
func redactValues(obj map[string]any, fields ...string) {
	for _, field := range fields {
		if m, ok := obj[field].(map[string]any); ok {
			for k := range m {
				m[k] = redacted
			}
		}
	}
}

// redactEnv replaces env[].value in every list of containers under v, wherever it is.
func redactEnv(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			if k == "containers" || k == "initContainers" || k == "ephemeralContainers" {
				for _, c := range asList(child) {
					if c, ok := c.(map[string]any); ok {
						for _, e := range asList(c["env"]) {
							if e, ok := e.(map[string]any); ok {
								if _, has := e["value"]; has {
									e["value"] = redacted
								}
							}
						}
					}
				}
			}
			redactEnv(child)
		}
	case []any:
		for _, child := range v {
			redactEnv(child)
		}
	}
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

func (s *Server) rollback(ctx context.Context, in *rollbackInput) (*rollbackOutput, error) {
	e, err := s.one(in.Owner, in.Repo, in.Environment)
	if err != nil {
		return nil, err
	}
	var target *history.Record
	for i := range e.Records {
		if e.Records[i].Number == in.To {
			target = &e.Records[i]
		}
	}
	switch {
	case target == nil:
		return nil, huma.Error404NotFound(historyName(in.To) + " is not in the kept history of " + e.Repo.Name + " (" + e.Repo.Environment + ")")
	case target.Phase != history.Succeeded:
		return nil, huma.Error409Conflict(target.Name() + " " + string(target.Phase) + "; only a succeeded deployment can be rolled back to")
	}
	p := view.Pause{Paused: true, Reason: "rolled back to " + target.Name() + " (" + source.ShortSHA(target.Commit.SHA) + ")", Since: time.Now().UTC()}
	if err := s.deps.Pauser.SetPause(ctx, e.Repo, p); err != nil {
		return nil, s.badGateway(e.Repo, "storing the rollback's pause state in the cluster", err)
	}
	if err := s.enqueue(ctx, e, controller.Request{Trigger: controller.TriggerRollback, Commit: target.Commit.SHA, Force: true}); err != nil {
		return nil, err
	}
	out := &rollbackOutput{Status: http.StatusAccepted}
	out.Body.Number = 1
	if cur, ok := e.Current(); ok {
		out.Body.Number = cur.Number + 1
	}
	out.Body.Message = "rollback of " + e.Repo.Name + " (" + e.Repo.Environment + ") to " + target.Name() + " queued"
	out.Body.Commit, out.Body.Paused, out.Body.PauseReason = target.Commit.SHA, true, p.Reason
	return out, nil
}

// enqueue queues req for e's repo; the error is the answer when it could not be.
func (s *Server) enqueue(ctx context.Context, e view.Entry, req controller.Request) error {
	err := s.deps.Queue.Enqueue(ctx, e.Repo.Key(), req)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, controller.ErrNotConfigured):
		return huma.Error404NotFound("repo " + e.Repo.Name + " left the config")
	}
	return huma.Error503ServiceUnavailable("the request for " + e.Repo.Name + " (" + e.Repo.Environment + ") was not queued, try again: " + err.Error())
}

// badGateway answers 502 for what deployd was doing in the cluster on repo's behalf, and
// logs the cause.
func (s *Server) badGateway(repo config.Repo, doing string, err error) error {
	s.opts.Log.Error("API: "+doing+" failed", "repo", repo.Name, "env", repo.Environment, "err", err)
	return huma.Error502BadGateway(doing + " failed (the cause is in deployd's log)")
}
