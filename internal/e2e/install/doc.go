// Package install tests deployd as its users run it: its image in Pods on a real node,
// installed with `kubectl apply --server-side -f k8s/` as the README says.
package install
