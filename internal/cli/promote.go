package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/deployd/deployd/internal/source"
	"github.com/deployd/deployd/pkg/client"
)

// promoteCmd runs deployd promote OWNER/REPO --to ENV [--commit SHA] [--wait]: it asks
// deployd to deploy a commit to an environment with promoteFrom, through its gate.
func promoteCmd(args []string, stdout, stderr io.Writer) error {
	fs, cf := newClientFlags("promote", stderr)
	to := fs.String("to", "", "the environment to promote to (one with promoteFrom in repos.yaml)")
	commit := fs.String("commit", "", "the full SHA to promote (default: the commit waiting to be promoted)")
	wait := fs.Bool("wait", false, "wait until the promotion is deployed or blocked; exit 1 when it is not deployed")
	timeout := fs.Duration("timeout", 10*time.Minute, "with --wait: how long to wait")
	owner, repo, err := parseRepo(fs, args)
	if err != nil {
		return err
	}
	if *to != "" {
		cf.environment = *to
	}
	if cf.environment == "" {
		return &usageError{errors.New("promote needs --to ENVIRONMENT, the environment to promote to")}
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	ctx := context.Background()
	params := &client.PromoteParams{Environment: cf.env()}
	if *commit != "" {
		params.Commit = commit
	}
	before, _ := current(ctx, c, owner, repo, cf.env())
	res, err := c.PromoteWithResponse(ctx, owner, repo, params)
	if err != nil {
		return &usageError{fmt.Errorf("reaching deployd at %s: %w", cf.server, err)}
	}
	if res.StatusCode()/100 != 2 {
		fmt.Fprintln(stderr, "deployd:", apiError(res.StatusCode(), res.Body))
		return &ExitError{Code: exitFailed}
	}
	var out struct {
		Message string `json:"message"`
		Commit  string `json:"commit"`
	}
	_ = json.Unmarshal(res.Body, &out)
	fmt.Fprintln(stdout, out.Message)
	if !*wait {
		return nil
	}
	return waitPromotion(ctx, c, owner, repo, cf.env(), out.Commit, before, *timeout, stdout)
}

// current is the number of the environment's newest record (0 before the first).
func current(ctx context.Context, c *client.ClientWithResponses, owner, repo string, env *string) (int64, error) {
	res, err := c.GetDeploymentWithResponse(ctx, owner, repo, &client.GetDeploymentParams{Environment: env})
	if err != nil || res.JSON200 == nil || len(res.JSON200.Environments) != 1 || res.JSON200.Environments[0].Current == nil {
		return 0, err
	}
	return res.JSON200.Environments[0].Current.Number, nil
}

// waitPromotion waits for a record newer than before, of commit, to end: deployed (exit
// 0), or blocked, failed or in error (exit 1, with why).
func waitPromotion(ctx context.Context, c *client.ClientWithResponses, owner, repo string, env *string, commit string, before int64, timeout time.Duration, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		res, err := c.ListHistoryWithResponse(ctx, owner, repo, &client.ListHistoryParams{Environment: env})
		if err == nil && res.JSON200 != nil {
			for _, r := range res.JSON200.Records {
				if r.Number <= before || r.Commit.Sha != commit || r.Ended == nil {
					continue
				}
				switch r.Phase {
				case client.RecordPhaseSucceeded:
					fmt.Fprintf(stdout, "%s of %s succeeded\n", r.Name, source.ShortSHA(commit))
					return nil
				case client.RecordPhaseSkippedNoChange, client.RecordPhaseSuperseded:
					continue
				}
				why := ""
				if r.Error != nil {
					why = ": " + *r.Error
				}
				fmt.Fprintf(stdout, "%s of %s %s%s\n", r.Name, source.ShortSHA(commit), r.Phase, why)
				return &ExitError{Code: exitFailed}
			}
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(stdout, "the promotion of %s did not end within %s\n", source.ShortSHA(commit), timeout)
			return &ExitError{Code: exitTimeout}
		case <-tick.C:
		}
	}
}

// promotionLine says, in the status table, which commit waits to be promoted and why.
func promotionLine(w io.Writer, p *client.PromotionStatus) {
	if p == nil || p.WaitingCommit == nil {
		return
	}
	reason := ""
	if p.Reason != nil {
		reason = " (" + *p.Reason + ")"
	}
	fmt.Fprintf(w, "  waiting to be promoted from %s: %s%s\n", p.From, source.ShortSHA(*p.WaitingCommit), reason)
}
