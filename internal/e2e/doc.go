// Package e2e tests what ships: the deployd binary, run with the rights k8s/ grants it,
// against the local cluster, a real git server and the GitHub stand-in.
package e2e
