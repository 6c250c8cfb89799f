package dashboard_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/deployd/deployd/internal/gittest"
)

// TestDashboardShowsPromotion: an environment with manual promotion shows the commit
// that succeeded in its source environment as waiting to be promoted.
func TestDashboardShowsPromotion(t *testing.T) {
	ctx := browser(t)
	srv := gittest.NewServer(t)
	const name = "haraldsk/an-application"
	head := srv.NewRepo(t, name).Commit("main", "v1", gittest.SampleAppFiles("v1"))
	dir := t.TempDir()
	cfg := "repos:\n"
	for _, e := range []string{"staging", "production, promoteFrom: staging, promotion: manual"} {
		cfg += fmt.Sprintf("  - {name: %s, url: '%s', namespace: %s, interval: 0, environment: %s}\n", name, srv.RepoURL(name), env.Namespace(t), e)
	}
	cfgPath, secret := filepath.Join(dir, "repos.yaml"), filepath.Join(dir, "secret")
	for path, content := range map[string]string{cfgPath: cfg, secret: "hook-secret\n"} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base, logs := startDeployd(t, cfgPath, secret, nil)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("deployd's log:\n%s", logs)
		}
	})
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatal(err)
	}
	pollPage(t, ctx, "production shows the commit waiting to be promoted",
		`[...document.querySelectorAll('[data-promotion]')].some((s) => s.textContent.includes("waiting for promotion from staging") && `+
			`s.textContent.includes("(ready)") && s.querySelector('code')?.dataset.sha === "`+head+`")`, time.Now().Add(time.Minute))
}
