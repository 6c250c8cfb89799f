package daemon

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/drift"
)

// TestDriftSummary: a stored drift summary reads back as written, keeps at most
// MaxFields fields per object, and stays under maxDriftSummary with drift still shown.
func TestDriftSummary(t *testing.T) {
	web := drift.Object{Ref: apply.Ref{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: "shop", Name: "web"},
		Fields: []drift.Field{{Path: ".spec.replicas", Manager: "kubectl"}}}
	svc := drift.Object{Ref: apply.Ref{Version: "v1", Kind: "Service", Namespace: "shop", Name: "svc"}, Deleted: true}
	var many []drift.Field
	for i := range drift.MaxFields + 1 {
		many = append(many, drift.Field{Path: fmt.Sprintf(".data.k%d", i), Manager: "kubectl-edit"})
	}
	var huge []drift.Object
	for i := range 2000 {
		huge = append(huge, drift.Object{Ref: apply.Ref{Version: "v1", Kind: "ConfigMap", Namespace: "shop", Name: strings.Repeat("x", 200) + fmt.Sprint(i)}, Deleted: true})
	}
	for _, tc := range []struct {
		name string
		in   drift.Status
		want drift.Status
	}{
		{"in sync", drift.Status{InSync: true}, drift.Status{InSync: true}},
		{"drifted", drift.Status{Objects: []drift.Object{svc, web}, Reason: "paused: drift is not corrected"},
			drift.Status{Objects: []drift.Object{svc, web}, Reason: "paused: drift is not corrected"}},
		{"one field over", drift.Status{Objects: []drift.Object{{Ref: web.Ref, Fields: many}}},
			drift.Status{Objects: []drift.Object{{Ref: web.Ref, Fields: many[:drift.MaxFields]}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := encodeDrift(tc.in)
			if diff := cmp.Diff(tc.want, decodeDrift(raw)); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
	raw := encodeDrift(drift.Status{Objects: huge})
	got := decodeDrift(raw)
	if len(raw) > maxDriftSummary || got.InSync || len(got.Objects) == 0 || len(got.Objects) >= len(huge) {
		t.Errorf("a summary over the cap: %d bytes, in sync %v, %d objects of %d", len(raw), got.InSync, len(got.Objects), len(huge))
	}
	if got := decodeDrift(`{"objects":`); !got.InSync {
		t.Errorf("an unreadable summary reads as drifted: %+v", got)
	}
}
