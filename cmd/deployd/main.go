// Command deployd deploys app repositories' manifests into the cluster it runs in and
// serves what runs over an HTTP API. See README.md.
package main

import (
	"os"

	"github.com/deployd/deployd/internal/cli"
)

func main() {
	cli.RouteClientGoLogs = true
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
