package source

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"

	"github.com/deployd/deployd/internal/config"
)

// authFor reads the repo's credentials from their files, on every call, so a rotated
// Kubernetes Secret takes effect without a restart. Errors never quote the secret.
func authFor(repo config.Repo) (transport.AuthMethod, error) {
	a := repo.Auth
	switch {
	case a.TokenFile != "":
		b, err := os.ReadFile(a.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("%s: reading auth.tokenFile: %w", repo.Name, err)
		}
		token := strings.TrimSpace(string(b))
		if token == "" {
			return nil, fmt.Errorf("%s: auth.tokenFile %s is empty", repo.Name, a.TokenFile)
		}
		// GitHub takes a token as the password of basic auth, with any user name.
		return &githttp.BasicAuth{Username: "x-access-token", Password: token}, nil
	case a.SSHKeyFile != "":
		keys, err := gitssh.NewPublicKeysFromFile(sshUser(repo.URL), a.SSHKeyFile, "")
		if err != nil {
			return nil, fmt.Errorf("%s: reading auth.sshKeyFile %s: %w", repo.Name, a.SSHKeyFile, errors.Unwrap(err))
		}
		if a.KnownHostsFile != "" {
			cb, err := gitssh.NewKnownHostsCallback(a.KnownHostsFile)
			if err != nil {
				return nil, fmt.Errorf("%s: reading auth.knownHostsFile: %w", repo.Name, err)
			}
			keys.HostKeyCallback = cb
		}
		return keys, nil
	}
	return nil, nil
}

// sshUser is the user named in an ssh URL, "git" when none is.
func sshUser(raw string) string {
	if !strings.Contains(raw, "://") {
		if user, _, ok := strings.Cut(raw, "@"); ok && !strings.Contains(user, ":") {
			return user
		}
		return "git"
	}
	if u, err := url.Parse(raw); err == nil && u.User != nil && u.User.Username() != "" {
		return u.User.Username()
	}
	return "git"
}
