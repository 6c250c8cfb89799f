// Command image builds deployd's image the way the Dockerfile says, without Docker, and
// writes it as a tarball that `ctr -n k8s.io images import` (or `docker load`) reads:
//
//	go run ./hack/image -o bin/deployd-image.tar -tag deployd:dev
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/deployd/deployd/internal/imagebuild"
)

func main() {
	out := flag.String("o", "bin/deployd-image.tar", "the tarball to write")
	tag := flag.String("tag", "deployd:dev", "the image's name")
	version := flag.String("version", "dev", "the VERSION build argument")
	commit := flag.String("commit", "unknown", "the COMMIT build argument")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	img, err := imagebuild.Deployd(ctx, ".", imagebuild.BuildOptions{
		Args:   map[string]string{"VERSION": *version, "COMMIT": *commit},
		Output: os.Stderr,
	})
	if err == nil {
		err = imagebuild.WriteTarball(img, *tag, *out)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s as %s\n", *tag, *out)
}
