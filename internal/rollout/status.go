// Package rollout says whether applied objects rolled out: Compute is a pure function of
// an object (kstatus plus replica counts and images), and Tracker keeps every managed
// object's status live from label-filtered watches and waits on them without polling.
package rollout

import (
	"fmt"
	"sort"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// Status is kstatus' verdict on an object.
type Status string

// The statuses, as kstatus names them.
const (
	Current     Status = Status(status.CurrentStatus)
	InProgress  Status = Status(status.InProgressStatus)
	Failed      Status = Status(status.FailedStatus)
	Terminating Status = Status(status.TerminatingStatus)
	NotFound    Status = Status(status.NotFoundStatus)
	Unknown     Status = Status(status.UnknownStatus)
)

// Replicas are a workload's replica counts.
type Replicas struct {
	Desired   int64 `json:"desired"`
	Updated   int64 `json:"updated"`
	Ready     int64 `json:"ready"`
	Available int64 `json:"available"`
}

// Job is a Job's pod counts.
type Job struct {
	Succeeded int64 `json:"succeeded"`
	Failed    int64 `json:"failed"`
}

// ObjectStatus is one object's rollout status.
type ObjectStatus struct {
	Status  Status `json:"status"`
	Message string `json:"message,omitempty"`
	// Reason is the failing condition's reason, e.g. ProgressDeadlineExceeded.
	Reason string `json:"reason,omitempty"`
	// Replicas is set for Deployments, StatefulSets, ReplicaSets and DaemonSets.
	Replicas *Replicas `json:"replicas,omitempty"`
	// Job is set for Jobs.
	Job *Job `json:"job,omitempty"`
	// Generation and ObservedGeneration tell whether the controller saw the latest spec.
	Generation         int64 `json:"generation"`
	ObservedGeneration int64 `json:"observedGeneration"`
	// Images are the images of every pod template container.
	Images []string `json:"images,omitempty"`
}

// Compute returns obj's status. It reads only obj: see kstatus for the rules per kind.
func Compute(obj *unstructured.Unstructured) ObjectStatus {
	out := ObjectStatus{Status: Unknown, Generation: obj.GetGeneration()}
	out.ObservedGeneration, _, _ = unstructured.NestedInt64(obj.Object, "status", "observedGeneration")
	if res, err := status.Compute(obj); err == nil {
		out.Status, out.Message = Status(res.Status), res.Message
	} else {
		out.Message = err.Error()
	}
	out.Images = images(obj)
	switch obj.GetKind() {
	case "Deployment", "StatefulSet", "ReplicaSet":
		out.Replicas = replicas(obj, "replicas", "updatedReplicas", "readyReplicas", "availableReplicas")
		if obj.GetKind() == "StatefulSet" {
			out.Replicas.Available, _, _ = unstructured.NestedInt64(obj.Object, "status", "availableReplicas")
		}
	case "DaemonSet":
		r := &Replicas{}
		r.Desired, _, _ = unstructured.NestedInt64(obj.Object, "status", "desiredNumberScheduled")
		r.Updated, _, _ = unstructured.NestedInt64(obj.Object, "status", "updatedNumberScheduled")
		r.Ready, _, _ = unstructured.NestedInt64(obj.Object, "status", "numberReady")
		r.Available, _, _ = unstructured.NestedInt64(obj.Object, "status", "numberAvailable")
		out.Replicas = r
	case "Job":
		j := &Job{}
		j.Succeeded, _, _ = unstructured.NestedInt64(obj.Object, "status", "succeeded")
		j.Failed, _, _ = unstructured.NestedInt64(obj.Object, "status", "failed")
		out.Job = j
	}
	if out.Status == Failed {
		out.Reason = failedReason(obj)
	}
	return out
}

func replicas(obj *unstructured.Unstructured, desired, updated, ready, available string) *Replicas {
	r := &Replicas{Desired: 1}
	if d, found, _ := unstructured.NestedInt64(obj.Object, "spec", desired); found {
		r.Desired = d
	}
	r.Updated, _, _ = unstructured.NestedInt64(obj.Object, "status", updated)
	r.Ready, _, _ = unstructured.NestedInt64(obj.Object, "status", ready)
	r.Available, _, _ = unstructured.NestedInt64(obj.Object, "status", available)
	return r
}

// failedReason is the reason of the condition that says the object failed: a
// Deployment's Progressing=False (ProgressDeadlineExceeded), a Job's Failed=True.
func failedReason(obj *unstructured.Unstructured) string {
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, want := range []struct{ typ, status string }{{"Progressing", "False"}, {"Failed", "True"}, {"Ready", "False"}} {
		for _, c := range conds {
			m, _ := c.(map[string]any)
			if r, ok := m["reason"].(string); ok && r != "" && m["type"] == want.typ && m["status"] == want.status {
				return r
			}
		}
	}
	return ""
}

// images lists the containers' images of an object's pod template (or a Pod's spec).
func images(obj *unstructured.Unstructured) []string {
	paths := [][]string{
		{"spec", "template", "spec"},
		{"spec", "jobTemplate", "spec", "template", "spec"},
		{"spec"},
	}
	seen := map[string]bool{}
	var out []string
	for _, p := range paths {
		for _, field := range []string{"initContainers", "containers"} {
			list, _, _ := unstructured.NestedSlice(obj.Object, append(append([]string{}, p...), field)...)
			for _, c := range list {
				m, _ := c.(map[string]any)
				if img, ok := m["image"].(string); ok && !seen[img] {
					seen[img] = true
					out = append(out, img)
				}
			}
		}
		if len(out) > 0 {
			break
		}
	}
	sort.Strings(out)
	return out
}

// Summary says in a few words why an object is not Current, e.g. "2 of 3 updated replicas available".
func (s ObjectStatus) Summary() string {
	switch {
	case s.Status == Failed && s.Reason != "":
		return s.Reason
	case s.Replicas != nil && s.Status != Current:
		return fmt.Sprintf("%d of %d updated replicas available", min(s.Replicas.Updated, s.Replicas.Available), s.Replicas.Desired)
	case s.Message != "":
		return s.Message
	}
	return string(s.Status)
}
