package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/deployd/deployd/internal/config"
)

// check validates a config file, printing every problem; it fails when there is one.
func check(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("deployd check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	opts := config.DefaultOptions()
	path := fs.String("config", "repos.yaml", "path to repos.yaml")
	fs.StringVar(&opts.DefaultEnvironment, "environment", opts.DefaultEnvironment, "environment of repos that set none")
	fs.BoolVar(&opts.GitHub, "github", false, "deployd reports to GitHub (a token or an app): promoteFrom may name another cluster's environment")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: deployd check [--config repos.yaml] [--environment E] [--github]\n\nValidates a config file and lists every problem with its line.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := config.Load(*path, opts)
	var cfgErr *config.Error
	switch {
	case errors.As(err, &cfgErr):
		fmt.Fprintln(stdout, cfgErr.Error())
		fmt.Fprintf(stderr, "%s: %d problem(s)\n", *path, len(cfgErr.Problems))
		return &ExitError{Code: 1}
	case err != nil:
		return err
	}
	fmt.Fprintf(stdout, "%s: ok, %d repo(s)\n", *path, len(cfg.Repos))
	for _, r := range cfg.Repos {
		fmt.Fprintf(stdout, "  %s@%s -> namespace %s, %s:%s every %s\n", r.Name, r.Environment, r.Namespace, r.Branch, r.ManifestPath(), interval(r))
	}
	return nil
}

func interval(r config.Repo) string {
	if r.Interval == 0 {
		return "webhook only"
	}
	return r.Interval.String()
}
