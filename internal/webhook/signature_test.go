package webhook

import "testing"

func TestSignatureIsWhatTheCheckAccepts(t *testing.T) {
	body := []byte(`{"ref":"refs/heads/main"}`)
	if !validSignature([]byte("s3cret"), body, Signature([]byte("s3cret"), body)) {
		t.Error("a delivery signed with the secret is refused")
	}
	if validSignature([]byte("s3cret"), body, Signature([]byte("other"), body)) {
		t.Error("a delivery signed with another secret is accepted")
	}
}
