package daemon

import (
	"context"
	"encoding/json"
	"log/slog"

	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/drift"
	"github.com/deployd/deployd/internal/history"
)

// driftKey is the state ConfigMap's data key holding the leader's drift summary of the
// repo, which followers serve.
const driftKey = "drift"

// maxDriftSummary bounds a stored drift summary; objects past it are left out.
const maxDriftSummary = 64 << 10

// driftSummary is a repo's drift as stored for followers.
type driftSummary struct {
	Reason  string         `json:"reason,omitempty"`
	Objects []drift.Object `json:"objects"`
}

// encodeDrift returns st as stored: empty when in sync, at most maxDriftSummary bytes.
func encodeDrift(st drift.Status) string {
	if st.InSync {
		return ""
	}
	sum := driftSummary{Reason: st.Reason, Objects: st.Objects}
	for i := range sum.Objects {
		sum.Objects[i].Fields = sum.Objects[i].Fields[:min(len(sum.Objects[i].Fields), drift.MaxFields)]
	}
	for {
		b, err := json.Marshal(sum)
		if err == nil && len(b) <= maxDriftSummary {
			return string(b)
		}
		if len(sum.Objects) <= 1 {
			return `{"objects":[]}` // still drifted, details too big to store
		}
		sum.Objects = sum.Objects[:len(sum.Objects)/2]
	}
}

// decodeDrift reads a stored drift summary; an empty or unreadable one is in sync.
func decodeDrift(raw string) drift.Status {
	var sum driftSummary
	if len(raw) == 0 || len(raw) > 2*maxDriftSummary || json.Unmarshal([]byte(raw), &sum) != nil {
		return drift.Status{InSync: true}
	}
	return drift.Status{Objects: sum.Objects, Reason: sum.Reason}
}

// replicaDrift is the API's drift: the detector's on the leader, the leader's stored
// summary on a follower.
type replicaDrift struct{ *parts }

func (r replicaDrift) Repo(key config.Key) drift.Status {
	if r.leading == nil || r.leading() {
		return r.drift.Repo(key)
	}
	cm, err := r.states.Get(context.Background(), config.Repo{Name: key.Name, Environment: key.Environment}.StateName())
	if err != nil || cm == nil {
		return drift.Status{InSync: true}
	}
	return decodeDrift(cm.Data[driftKey])
}

// publishDrift writes, on the leader, each repo's drift summary into its state
// ConfigMap when it changed since last written, each time the detector pokes, until ctx
// ends.
func (p *parts) publishDrift(ctx context.Context, cfg func() *config.Config, log *slog.Logger) {
	written := map[config.Key]string{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.driftPoke:
		}
		if p.leading == nil || !p.leading() {
			clear(written) // a new term reads what is stored
			continue
		}
		for _, repo := range cfg().Repos {
			key := repo.Key()
			raw := encodeDrift(p.drift.Repo(key))
			if last, ok := written[key]; ok && last == raw {
				continue
			}
			if cm, err := p.states.Get(ctx, repo.StateName()); err != nil || cm == nil {
				continue // nothing deployed yet: no ConfigMap to create for drift
			}
			err := p.states.Modify(ctx, repo.StateName(), history.Meta(repo), func(data map[string]string) error {
				if raw == "" {
					delete(data, driftKey)
				} else {
					data[driftKey] = raw
				}
				return nil
			})
			if err != nil {
				log.Warn("could not store the repo's drift for the followers; retried at its next change", "repo", repo.Name, "env", repo.Environment, "err", err)
				delete(written, key)
				continue
			}
			written[key] = raw
		}
	}
}

// pokeDrift asks publishDrift to look again, without waiting.
func (p *parts) pokeDrift() {
	select {
	case p.driftPoke <- struct{}{}:
	default:
	}
}
