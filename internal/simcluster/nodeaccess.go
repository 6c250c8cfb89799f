package simcluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// prepareNodeAccess writes the tokens' values and the kubelet client certificate for
// Options.RealNode, and returns the API server flags that go with them (besides the
// Node authorizer, which the caller puts in --authorization-mode).
func (c *Cluster) prepareNodeAccess() ([]string, error) {
	pki := c.path("pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", pki, err)
	}
	caFile, certFile, keyFile := filepath.Join(pki, "kubelet-client-ca.crt"), filepath.Join(pki, "kubelet-client.crt"), filepath.Join(pki, "kubelet-client.key")
	if err := writeKubeletClientCert(caFile, certFile, keyFile); err != nil {
		return nil, fmt.Errorf("writing the kubelet client certificate: %w", err)
	}
	c.NodeAccess = &NodeAccess{
		NodeName:        c.opts.RealNode,
		KubeletToken:    randomHex(16),
		ProxyToken:      randomHex(16),
		KubeletClientCA: caFile,
	}
	return []string{
		"--kubelet-client-certificate", certFile, "--kubelet-client-key", keyFile,
		"--kubelet-preferred-address-types", "InternalIP,Hostname",
	}, nil
}

// writeKubeletClientCert writes a CA and, signed by it, the client certificate the API
// server shows kubelets: user kube-apiserver-kubelet-client in group system:masters.
func writeKubeletClientCert(caFile, certFile, keyFile string) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now().Add(-time.Hour)
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "simcluster-kubelet-client-ca"},
		NotBefore: now, NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	cert := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
		NotBefore: now, NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	certDER, err := x509.CreateCertificate(rand.Reader, cert, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		path, kind string
		der        []byte
		mode       os.FileMode
	}{
		{caFile, "CERTIFICATE", caDER, 0o644},
		{certFile, "CERTIFICATE", certDER, 0o644},
		{keyFile, "EC PRIVATE KEY", keyDER, 0o600},
	} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.kind, Bytes: f.der}), f.mode); err != nil {
			return err
		}
	}
	return nil
}
