// Package drift finds where the cluster stopped matching what deployd applied (an
// applied object deleted, a field deployd's apply owned changed or taken by another
// manager) and has each repo's drift corrected, only reported, or ignored.
package drift

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"

	"github.com/deployd/deployd/internal/apply"
	"github.com/deployd/deployd/internal/config"
	"github.com/deployd/deployd/internal/panics"
)

// AnnotationDrift set to "ignore" on an applied object leaves its drift alone.
const AnnotationDrift = "deployd.dev/drift"

// Bounds on what is kept per object: the fields listed as drifted, and the size of the
// owned-fields baseline (an object over it is checked for deletion only).
const (
	MaxFields   = 20
	MaxBaseline = 64 << 10
)

// Field is one drifted field: deployd's apply owned it, and now Manager does (empty when
// the field was removed and no manager owns it).
type Field struct {
	Path    string `json:"path"`
	Manager string `json:"manager,omitempty"`
}

// Object is one applied object that drifted.
type Object struct {
	Ref apply.Ref `json:"ref"`
	// Deleted is true when the object is gone from the cluster.
	Deleted bool `json:"deleted,omitempty"`
	// Fields are the drifted fields, at most MaxFields.
	Fields []Field `json:"fields,omitempty"`
}

// Status is a repo's drift.
type Status struct {
	// InSync is false while any applied object drifted.
	InSync bool
	// Objects are the drifted objects, sorted.
	Objects []Object
	// Reason says why drift is not corrected at once, e.g. "fighting with hpa-controller".
	Reason string
	// Corrections counts the corrections asked for since deployd started.
	Corrections int
}

// Options configure a Detector.
type Options struct {
	// FieldManager is deployd's server-side apply field manager.
	FieldManager string
	// Settle is how long drift waits before its correction, so a burst of edits is
	// corrected once.
	Settle time.Duration
	// Base is the first back-off when drift comes back within Window of a correction
	// (two writers fighting); it doubles each time, up to Max.
	Base, Max time.Duration
	// Window is how soon after a correction new drift counts as fighting.
	Window time.Duration
	// Correct asks for the repo to be re-applied at commit; false when it cannot be
	// (this replica is not the leader): it is asked again after Max.
	Correct func(repo config.Repo, commit, note string) bool
	// Paused reports whether a repo is paused: its drift is reported, not corrected.
	Paused func(config.Key) bool
	// Changed is told after every change of any repo's drift.
	Changed func()
	// Check dry-run applies repo's commit and returns what an apply would change (nil: no
	// periodic check). It runs every repo's DriftInterval, jittered, and first within
	// FirstCheck of a start, to find what the watches cannot see: drift while deployd was down.
	Check      func(ctx context.Context, repo config.Repo, commit string) ([]Object, error)
	FirstCheck time.Duration
	// MaxBytes bounds the owned-fields baselines kept for all objects together (0: 256 MiB).
	MaxBytes int
}

// checkTimeout bounds one repo's dry-run check.
const checkTimeout = 2 * time.Minute

// DefaultOptions settle for 100ms and back off from 1s to 5m within a 5m window.
func DefaultOptions() Options {
	return Options{FieldManager: "deployd", Settle: 100 * time.Millisecond, Base: time.Second, Max: 5 * time.Minute, Window: 5 * time.Minute, FirstCheck: time.Minute}
}

// Detector keeps, per applied object, the fields deployd's last apply owned, and
// compares each object the watches see with them. Its memory grows with the applied
// objects (one owned-fields copy each, at most MaxBaseline bytes), not with the cluster.
type Detector struct {
	opts Options

	mu    sync.Mutex
	repos map[config.Key]*repoState
	byObj map[string]config.Key
	// bytes are the baselines' bytes kept, at most opts.MaxBytes.
	bytes int
}

type tracked struct {
	ref apply.Ref
	// fields are what deployd's apply owned (FieldsV1 JSON); nil until known.
	fields []byte
	// tooBig: the owned fields were over a bound (MaxBaseline, MaxBytes); only deletion is seen.
	tooBig bool
	ignore bool
	drift  *Object
	// checked: drift was found by the dry-run check; only an apply clears it (the
	// managed fields need not show it).
	checked bool
	// seen is the last event seen while the repo was being applied, judged when the
	// apply ends.
	seen *seen
}

// seen is an event seen while an apply ran.
type seen struct {
	deleted bool
	rv      string
	mfs     []metav1.ManagedFieldsEntry
}

type repoState struct {
	repo     config.Repo
	commit   string
	applying int
	objects  map[string]*tracked

	timer       *time.Timer
	check       *time.Timer
	last        time.Time
	streak      int
	reason      string
	corrections int
}

// New returns a Detector.
func New(opts Options) *Detector {
	if opts.Correct == nil {
		opts.Correct = func(config.Repo, string, string) bool { return false }
	}
	if opts.Paused == nil {
		opts.Paused = func(config.Key) bool { return false }
	}
	if opts.Changed == nil {
		opts.Changed = func() {}
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 256 << 20
	}
	return &Detector{opts: opts, repos: map[config.Key]*repoState{}, byObj: map[string]config.Key{}}
}

func objKey(group, kind, namespace, name string) string {
	return schema.GroupKind{Group: group, Kind: kind}.String() + "/" + namespace + "/" + name
}

func refKey(r apply.Ref) string { return objKey(r.Group, r.Kind, r.Namespace, r.Name) }

func (d *Detector) repo(repo config.Repo) *repoState {
	rs := d.repos[repo.Key()]
	if rs == nil {
		rs = &repoState{objects: map[string]*tracked{}}
		d.repos[repo.Key()] = rs
	}
	rs.repo = repo
	return rs
}

// Begin tells that an apply of repo starts: until it ends, what the watches see of the
// repo's objects is the apply's doing, not drift.
func (d *Detector) Begin(repo config.Repo) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.repo(repo).applying++
}

// End tells that an apply of repo at commit ended with res and err: its objects' owned
// fields become the baseline, and their drift is cleared. A failed apply keeps the
// baseline of objects it did not reach.
func (d *Detector) End(repo config.Repo, commit string, res apply.Result, err error) {
	d.mu.Lock()
	defer d.opts.Changed()
	defer d.mu.Unlock()
	rs := d.repo(repo)
	rs.applying--
	next := map[string]*tracked{}
	if err != nil {
		next = rs.objects
	}
	for _, c := range res.Changes {
		k := refKey(c.Object)
		old := rs.objects[k]
		if old != nil {
			d.release(old)
		}
		if c.Action == apply.Pruned || c.Action == apply.PruneSkipped {
			delete(next, k)
			delete(d.byObj, k)
			continue
		}
		t := &tracked{ref: c.Object}
		d.keep(t, c.Fields)
		if old != nil {
			t.ignore = old.ignore
			d.judge(rs, t, old.seen, c.ResourceVersion)
		}
		next[k] = t
	}
	for _, t := range next {
		if t.seen != nil { // not in this apply's changes (it failed before them)
			d.judge(rs, t, t.seen, "")
		}
	}
	for k, old := range rs.objects {
		if _, ok := next[k]; !ok {
			delete(d.byObj, k)
			d.release(old)
		}
	}
	for k := range next {
		d.byObj[k] = repo.Key()
	}
	rs.objects = next
	if err == nil {
		rs.commit = commit
		d.armCheck(repo.Key(), rs, false)
	}
	if rs.drifted() {
		d.schedule(repo.Key(), rs) // a failed correction is asked again, backing off
	}
}

// Expect tells, after a restart, which objects repo's deployed commit applied: their
// baseline is taken from the first sight of each.
func (d *Detector) Expect(repo config.Repo, commit string, refs []apply.Ref) {
	d.mu.Lock()
	defer d.mu.Unlock()
	rs := d.repo(repo)
	if rs.commit != "" {
		return // an apply since the start knows better
	}
	rs.commit = commit
	for _, r := range refs {
		k := refKey(r)
		if _, ok := rs.objects[k]; !ok {
			rs.objects[k] = &tracked{ref: r}
			d.byObj[k] = repo.Key()
		}
	}
	d.armCheck(repo.Key(), rs, true)
}

// Forget drops a repo (removed from the config).
func (d *Detector) Forget(key config.Key) {
	d.mu.Lock()
	defer d.mu.Unlock()
	rs := d.repos[key]
	if rs == nil {
		return
	}
	if rs.timer != nil {
		rs.timer.Stop()
	}
	if rs.check != nil {
		rs.check.Stop()
	}
	for k, t := range rs.objects {
		delete(d.byObj, k)
		d.release(t)
	}
	delete(d.repos, key)
}

// Observe compares an object a watch saw (whole, managed fields and all) with what
// deployd applied; deleted is true when the watch saw it deleted. It keeps nothing of u.
func (d *Detector) Observe(u *unstructured.Unstructured, deleted bool) {
	if !deleted && len(u.GetManagedFields()) == 0 {
		return // not a whole object: an object deployd applied always has managed fields
	}
	gvk := u.GroupVersionKind()
	k := objKey(gvk.Group, gvk.Kind, u.GetNamespace(), u.GetName())
	d.mu.Lock()
	key, ok := d.byObj[k]
	if !ok {
		d.mu.Unlock()
		return
	}
	rs := d.repos[key]
	t := rs.objects[k]
	if !deleted {
		t.ignore = u.GetAnnotations()[AnnotationDrift] == "ignore"
	}
	if rs.applying > 0 {
		// The apply's doing, or a change made meanwhile: told apart when it ends.
		t.seen = &seen{deleted: deleted, rv: u.GetResourceVersion()}
		if !deleted {
			t.seen.mfs = u.GetManagedFields()
		}
		d.mu.Unlock()
		return
	}
	var next *Object
	switch {
	case t.ignore || rs.repo.DriftPolicy() == config.DriftIgnore:
	case deleted:
		next = &Object{Ref: t.ref, Deleted: true}
	case t.tooBig:
	case t.fields == nil:
		d.keep(t, Owned(u.GetManagedFields(), d.opts.FieldManager))
	default:
		next = Compare(t.ref, t.fields, u.GetManagedFields(), d.opts.FieldManager)
	}
	if next == nil && t.checked && !t.ignore && rs.repo.DriftPolicy() != config.DriftIgnore {
		next = t.drift
	} else {
		t.checked = false
	}
	changed := !same(t.drift, next)
	t.drift = next
	if changed && next != nil {
		d.schedule(key, rs)
	}
	d.mu.Unlock()
	if changed {
		d.opts.Changed()
	}
}

// armCheck arms the repo's periodic dry-run check, unless armed or off: after its
// DriftInterval ±10 %, or, first after a start, within FirstCheck. Called with d.mu held.
func (d *Detector) armCheck(key config.Key, rs *repoState, first bool) {
	every := rs.repo.DriftInterval
	if rs.check != nil || d.opts.Check == nil || every <= 0 {
		return
	}
	delay := time.Duration(float64(every) * (0.9 + 0.2*rand.Float64()))
	if first {
		delay = time.Duration(float64(min(every, d.opts.FirstCheck)) * rand.Float64())
	}
	rs.check = time.AfterFunc(delay, func() { d.runCheck(key, rs) })
}

// runCheck dry-runs the repo's applied commit and takes what it finds as drift.
func (d *Detector) runCheck(key config.Key, rs *repoState) {
	d.mu.Lock()
	if d.repos[key] != rs {
		d.mu.Unlock()
		return
	}
	rs.check = nil
	skip := rs.applying > 0 || rs.commit == "" || rs.repo.DriftPolicy() == config.DriftIgnore
	repo, commit := rs.repo, rs.commit
	d.mu.Unlock()
	var found []Object
	var err error
	if !skip {
		ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
		found, err = d.checkSafely(ctx, repo, commit)
		cancel()
	}
	d.mu.Lock()
	changed := false
	if d.repos[key] == rs && err == nil && rs.applying == 0 && rs.commit == commit {
		for _, o := range found {
			t := rs.objects[refKey(o.Ref)]
			if t == nil || t.ignore || t.drift != nil {
				continue
			}
			o.Fields = o.Fields[:min(len(o.Fields), MaxFields)]
			t.drift, t.checked, changed = &o, true, true
		}
		if changed {
			d.schedule(key, rs)
		}
	}
	if d.repos[key] == rs {
		d.armCheck(key, rs, false)
	}
	d.mu.Unlock()
	if changed {
		d.opts.Changed()
	}
}

// checkSafely is Check behind a recover: it runs in a timer's goroutine.
func (d *Detector) checkSafely(ctx context.Context, repo config.Repo, commit string) (found []Object, err error) {
	defer panics.Recover(&err)
	return d.opts.Check(ctx, repo, commit)
}

// judge takes an event seen during an apply as drift when it is not older than the
// apply's result of the object (resource version appliedRV): the object deleted, or its
// owned fields changed, after deployd applied it. Called with d.mu held.
func (d *Detector) judge(rs *repoState, t *tracked, s *seen, appliedRV string) {
	t.seen = nil
	if s == nil || t.ignore || rs.repo.DriftPolicy() == config.DriftIgnore || !notOlder(s.rv, appliedRV) {
		return
	}
	switch {
	case s.deleted:
		t.drift = &Object{Ref: t.ref, Deleted: true}
	case t.fields != nil:
		t.drift = Compare(t.ref, t.fields, s.mfs, d.opts.FieldManager)
	}
}

// notOlder compares resource versions as the API server's etcd revisions they are;
// one that is not a number is taken as newer.
func notOlder(rv, than string) bool {
	a, err1 := strconv.ParseUint(rv, 10, 64)
	b, err2 := strconv.ParseUint(than, 10, 64)
	return err1 != nil || err2 != nil || a >= b
}

// keep makes fields t's baseline, within the bounds: over MaxBaseline for the object,
// or over MaxBytes for all objects, t is watched for deletion (and dry-run checked) only.
// Called with d.mu held.
func (d *Detector) keep(t *tracked, fields []byte) {
	d.release(t)
	t.tooBig = len(fields) > MaxBaseline || d.bytes+len(fields) > d.opts.MaxBytes
	if !t.tooBig {
		t.fields = fields
		d.bytes += len(fields)
	}
}

// release gives t's baseline back to the budget. Called with d.mu held.
func (d *Detector) release(t *tracked) {
	d.bytes -= len(t.fields)
	t.fields = nil
}

// Owned returns the fields manager's apply owns among mfs (FieldsV1 JSON), or nil.
func Owned(mfs []metav1.ManagedFieldsEntry, manager string) []byte {
	for _, mf := range mfs {
		if mf.Manager == manager && mf.Operation == metav1.ManagedFieldsOperationApply && mf.Subresource == "" && mf.FieldsV1 != nil {
			return bytes.Clone(mf.FieldsV1.GetRawBytes())
		}
	}
	return nil
}

// Compare returns how an object whose managed fields are now mfs drifted from the
// fields manager's apply owned (baseline, FieldsV1 JSON), or nil. A field drifted when
// manager's apply no longer owns it: another manager changed it (an update takes the
// fields it changes) or took it with a forced apply, or it was removed. Fields the
// manager never owned (a replica count an autoscaler sets) are not drift.
func Compare(ref apply.Ref, baseline []byte, mfs []metav1.ManagedFieldsEntry, manager string) *Object {
	base := &fieldpath.Set{}
	if err := base.FromJSON(bytes.NewReader(baseline)); err != nil {
		return nil
	}
	live := &fieldpath.Set{}
	type owner struct {
		name string
		set  *fieldpath.Set
		time time.Time
	}
	var others []owner
	for _, mf := range mfs {
		if mf.FieldsV1 == nil || mf.Subresource != "" {
			continue
		}
		s := &fieldpath.Set{}
		if s.FromJSON(mf.FieldsV1.GetRawReader()) != nil {
			continue
		}
		if mf.Manager == manager && mf.Operation == metav1.ManagedFieldsOperationApply {
			live = s
			continue
		}
		o := owner{name: mf.Manager, set: s}
		if mf.Time != nil {
			o.time = mf.Time.Time
		}
		others = append(others, o)
	}
	lost := base.Difference(live).Leaves()
	if lost.Empty() {
		return nil
	}
	// A removed field belongs to no one: the latest other writer removed it.
	latest := ""
	var at time.Time
	for _, o := range others {
		if latest == "" || o.time.After(at) {
			latest, at = o.name, o.time
		}
	}
	out := &Object{Ref: ref}
	lost.Iterate(func(p fieldpath.Path) {
		if len(out.Fields) >= MaxFields {
			return
		}
		f := Field{Path: p.String(), Manager: latest}
		for _, o := range others {
			if o.set.Has(p) {
				f.Manager = o.name
				break
			}
		}
		out.Fields = append(out.Fields, f)
	})
	return out
}

func same(a, b *Object) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.Deleted != b.Deleted || len(a.Fields) != len(b.Fields) {
		return false
	}
	for i := range a.Fields {
		if a.Fields[i] != b.Fields[i] {
			return false
		}
	}
	return true
}

func (rs *repoState) drifted() bool {
	for _, t := range rs.objects {
		if t.drift != nil {
			return true
		}
	}
	return false
}

// manager names the first other manager found among the drifted fields.
func (rs *repoState) manager() string {
	for _, o := range rs.sorted() {
		for _, f := range o.Fields {
			if f.Manager != "" {
				return f.Manager
			}
		}
	}
	return "another writer"
}

// note says what drifted, for the correction's record: the first few objects.
func (rs *repoState) note() string {
	objs := rs.sorted()
	var parts []string
	for i, o := range objs {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("and %d more", len(objs)-i))
			break
		}
		switch {
		case o.Deleted:
			parts = append(parts, o.Ref.String()+" deleted")
		default:
			var fs []string
			for j, f := range o.Fields {
				if j == 3 {
					fs = append(fs, "...")
					break
				}
				by := f.Manager
				if by == "" {
					by = "another writer"
				}
				fs = append(fs, f.Path+" by "+by)
			}
			parts = append(parts, o.Ref.String()+" "+strings.Join(fs, ", "))
		}
	}
	return "drift: " + strings.Join(parts, "; ")
}

func (rs *repoState) sorted() []Object {
	var out []Object
	for _, t := range rs.objects {
		if t.drift != nil {
			out = append(out, *t.drift)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref.String() < out[j].Ref.String() })
	return out
}

// schedule arms the repo's correction, unless one is armed or its policy is not to
// correct: after Settle, or, when drift came back within Window of the last correction,
// after a back-off doubling from Base to Max. Called with d.mu held.
func (d *Detector) schedule(key config.Key, rs *repoState) {
	if rs.timer != nil || rs.repo.DriftPolicy() != config.DriftCorrect || rs.commit == "" {
		return
	}
	delay := d.opts.Settle
	if !rs.last.IsZero() && time.Since(rs.last) < d.opts.Window {
		rs.streak = min(rs.streak+1, 30)
		delay = min(d.opts.Base<<rs.streak, d.opts.Max)
		if delay <= 0 {
			delay = d.opts.Max
		}
		rs.reason = "fighting with " + rs.manager()
	} else {
		rs.streak, rs.reason = 0, ""
	}
	rs.timer = time.AfterFunc(delay, func() { d.fire(key) })
}

// fire asks for the correction of a repo still drifted.
func (d *Detector) fire(key config.Key) {
	d.mu.Lock()
	rs := d.repos[key]
	if rs == nil {
		d.mu.Unlock()
		return
	}
	rs.timer = nil
	if !rs.drifted() || rs.repo.DriftPolicy() != config.DriftCorrect || rs.applying > 0 {
		d.mu.Unlock()
		return
	}
	repo, commit, note := rs.repo, rs.commit, rs.note()
	d.mu.Unlock()
	paused := d.opts.Paused(key)
	asked := !paused && d.opts.Correct(repo, commit, note)
	d.mu.Lock()
	defer d.opts.Changed()
	defer d.mu.Unlock()
	if d.repos[key] != rs {
		return
	}
	if !asked {
		if paused {
			rs.reason = "paused: drift is not corrected"
		}
		if rs.timer == nil {
			rs.timer = time.AfterFunc(d.opts.Max, func() { d.fire(key) })
		}
		return
	}
	rs.last = time.Now()
	rs.corrections++
}

// Repo returns a repo's drift.
func (d *Detector) Repo(key config.Key) Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	rs := d.repos[key]
	if rs == nil {
		return Status{InSync: true}
	}
	objs := rs.sorted()
	st := Status{InSync: len(objs) == 0, Objects: objs, Corrections: rs.corrections}
	if !st.InSync {
		st.Reason = rs.reason
	}
	return st
}

// Counts returns how many applied objects drifted, and in how many repos, for metrics.
func (d *Detector) Counts() (objects, repos int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, rs := range d.repos {
		n := 0
		for _, t := range rs.objects {
			if t.drift != nil {
				n++
			}
		}
		objects += n
		if n > 0 {
			repos++
		}
	}
	return objects, repos
}

// Applying applies objects (apply.Applier does).
type Applying interface {
	Apply(ctx context.Context, req apply.Request) (apply.Result, error)
}

// Applier tells its Detector of every apply the wrapped applier makes.
type Applier struct {
	Next     Applying
	Detector *Detector
}

// Apply applies through Next, between the Detector's Begin and End.
func (a Applier) Apply(ctx context.Context, req apply.Request) (apply.Result, error) {
	a.Detector.Begin(req.Repo)
	ended := false
	defer func() {
		if !ended { // Next panicked: the apply ended, nothing known of it
			a.Detector.End(req.Repo, req.Commit, apply.Result{}, errors.New("the apply panicked"))
		}
	}()
	res, err := a.Next.Apply(ctx, req)
	ended = true
	a.Detector.End(req.Repo, req.Commit, res, err)
	return res, err
}
