package cli

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/deployd/deployd/internal/gittest"
)

// delivery sends a signed push with a delivery id and returns the answer.
func delivery(t *testing.T, base, secret, id, body string) (int, string) {
	t.Helper()
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(body))
	req, _ := http.NewRequest(http.MethodPost, base+"/webhooks/github", strings.NewReader(body))
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", id)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Message string }
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out.Message
}

// TestFollowerThatCannotHandOver: a follower whose write of the request for the leader
// is refused (a ResourceQuota allows no new ConfigMap in deployd's namespace) answers
// the webhook and the API with 503 and the reason, never 202; the CLI says the request
// was not queued; once the write is allowed, GitHub's resend of the same delivery is
// taken.
func TestFollowerThatCannotHandOver(t *testing.T) {
	ctx := context.Background()
	srv := gittest.NewServer(t)
	srv.NewRepo(t, "shop/web").Commit("main", "one", map[string]string{"deploy/manifests/cm.yaml": cm("one")})
	appNS, stateNS := env.Namespace(t), env.Namespace(t)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "repos.yaml", "repos:\n  - {name: shop/web, url: '"+srv.RepoURL("shop/web")+"', namespace: "+appNS+", interval: 0}\n")
	secret := writeFile(t, dir, "secret", "hook-secret\n")
	token := writeFile(t, dir, "token", "api-token\n")

	// Another replica leads, for an hour: the one started here stays a follower.
	now := metav1.NewMicroTime(time.Now())
	if _, err := env.Client.CoordinationV1().Leases(stateNS).Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "deployd"},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("another-replica"), LeaseDurationSeconds: ptr.To[int32](3600),
			AcquireTime: &now, RenewTime: &now},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	quota := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: "no-configmaps"},
		Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{"count/configmaps": resource.MustParse("0")}}}
	if _, err := env.Client.CoreV1().ResourceQuotas(stateNS).Create(ctx, quota, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	b := startReplica(t, "--config "+cfg+" --kubeconfig "+env.Kubeconfig+" --cache-dir "+filepath.Join(dir, "b")+" --namespace "+stateNS+
		" --webhook-secret-file "+secret+" --api-token-file "+token+" --log-format json --leader-elect")

	push := `{"ref":"refs/heads/main","repository":{"full_name":"shop/web"}}`
	code, msg := delivery(t, b.base, "hook-secret", "delivery-1", push)
	if code != http.StatusServiceUnavailable || !strings.Contains(msg, "not queued") || !strings.Contains(msg, "quota") {
		t.Errorf("push to a follower that cannot hand it over: %d %q, want 503 with the reason", code, msg)
	}
	exit, _, stderr := runCLI(t, "sync", "shop/web", "--server", b.base, "--token-file", token)
	if exit == 0 || !strings.Contains(stderr, "503") || !strings.Contains(stderr, "not queued") || !strings.Contains(stderr, "quota") {
		t.Errorf("deployd sync through that follower: exit %d, %q; want a failure saying nothing was queued, and why", exit, stderr)
	}

	if err := env.Client.CoreV1().ResourceQuotas(stateNS).Delete(ctx, quota.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for { // the quota's removal reaches the API server's admission cache a moment later
		code, msg = delivery(t, b.base, "hook-secret", "delivery-1", push)
		if code == http.StatusAccepted || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // polling, with a deadline
	}
	if code != http.StatusAccepted {
		t.Fatalf("GitHub's resend once the write is allowed: %d %q, want 202", code, msg)
	}
	cms, err := env.Client.CoreV1().ConfigMaps(stateNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	handed := 0
	for _, cm := range cms.Items {
		if strings.Contains(cm.Annotations["deployd.dev/requests"], `"webhook"`) {
			handed++
		}
	}
	if handed != 1 {
		t.Errorf("%d state ConfigMaps hold the handed-over push, want 1", handed)
	}
	if code, msg := delivery(t, b.base, "hook-secret", "delivery-1", push); code != http.StatusOK || !strings.Contains(msg, "duplicate") {
		t.Errorf("the same delivery once more: %d %q, want 200 duplicate", code, msg)
	}
}
