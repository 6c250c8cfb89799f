package promote

import (
	"fmt"
	"path"
	"sort"
	"strings"
)

// maxDifferences is how many image differences a blocked record names.
const maxDifferences = 3

// compare says how the images a commit would run in env differ from those that ran in
// from, image repository by image repository ("image web: staging ran …:1.4.2, production
// would run …:1.4.3"); "" when they are the same.
func compare(from, env string, ran, would []string) string {
	a, b := byRepository(ran), byRepository(would)
	names := map[string]bool{}
	for k := range a {
		names[k] = true
	}
	for k := range b {
		names[k] = true
	}
	repos := make([]string, 0, len(names))
	for k := range names {
		repos = append(repos, k)
	}
	sort.Strings(repos)
	var diffs []string
	for _, r := range repos {
		x, y := strings.Join(a[r], ", "), strings.Join(b[r], ", ")
		if x == y {
			continue
		}
		diffs = append(diffs, fmt.Sprintf("image %s: %s ran %s, %s would run %s", path.Base(r), from, orNothing(x), env, orNothing(y)))
	}
	if len(diffs) > maxDifferences {
		diffs = append(diffs[:maxDifferences], fmt.Sprintf("and %d more", len(diffs)-maxDifferences))
	}
	return strings.Join(diffs, "; ")
}

func orNothing(s string) string {
	if s == "" {
		return "no such image"
	}
	return s
}

// byRepository groups images by their repository (the reference without tag or digest),
// each group sorted.
func byRepository(images []string) map[string][]string {
	out := map[string][]string{}
	for _, img := range images {
		r := repository(img)
		out[r] = append(out[r], img)
	}
	for _, l := range out {
		sort.Strings(l)
	}
	return out
}

// repository strips an image reference's digest and tag: ghcr.io/acme/web:1.4.2 →
// ghcr.io/acme/web (a registry's port stays: localhost:5000/web).
func repository(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	return ref
}
