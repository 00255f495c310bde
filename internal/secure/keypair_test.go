package secure_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mmdb/mmdb/internal/certtest"
	"github.com/mmdb/mmdb/internal/secure"
)

// TestReloadRefusesUnusableCertificates: Reload (SIGHUP) keeps the pair
// in use when the files now hold a certificate no handshake could use:
// expired, not valid yet, or without the node's name (whoever dials the
// node checks it). A renewed certificate with the same name is taken.
// Before, each was taken, and every connection from then on failed.
func TestReloadRefusesUnusableCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := certtest.NewCA(t, dir, "ca")
	cert, key := ca.Issue(t, "b")
	kp, err := secure.LoadKeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	// put replaces the pair's files with those of another certificate.
	put := func(c, k string) {
		t.Helper()
		for src, dst := range map[string]string{c: cert, k: key} {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	serving := secure.Server(kp, nil, false)
	inUse := func() string { // the certificate a handshake gets
		t.Helper()
		c, err := serving.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return secure.Names(c.Leaf)[0] + " " + c.Leaf.NotAfter.String()
	}
	before := inUse()
	other := certtest.NewCA(t, t.TempDir(), "ca")
	now := time.Now()
	for _, tc := range []struct {
		what, name, want string
		from, to         time.Time
	}{
		{"an expired certificate", "b", "expired", now.Add(-48 * time.Hour), now.Add(-time.Hour)},
		{"a certificate not valid yet", "b", "not valid before", now.Add(time.Hour), now.Add(48 * time.Hour)},
		{"a certificate for another node", "c", `does not name "b"`, now.Add(-time.Hour), now.Add(48 * time.Hour)},
	} {
		put(other.IssueValid(t, tc.name, tc.from, tc.to))
		if err := kp.Reload(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Reload of %s: %v, want an error saying %q", tc.what, err, tc.want)
		}
		if got := inUse(); got != before {
			t.Errorf("after the Reload of %s the pair in use is %s, want %s", tc.what, got, before)
		}
	}
	put(other.IssueValid(t, "b", now.Add(-time.Hour), now.Add(72*time.Hour)))
	if err := kp.Reload(); err != nil {
		t.Fatalf("Reload of a renewed certificate: %v", err)
	}
	if got := inUse(); got == before {
		t.Fatal("the renewed certificate is not in use")
	}
}
