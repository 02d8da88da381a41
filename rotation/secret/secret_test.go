package secret_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"text/template"

	"github.com/spendchecker/spendchecker/rotation/secret"
)

func TestMask(t *testing.T) {
	tests := []struct{ in, want string }{
		{"sk-1234567890abcdefWXYZ", "sk-12...WXYZ"},
		{"short", "****"},
		{"", "****"},
		{"fifteen-chars!!", "****"},
		{"exactly16chars!!", "exact...rs!!"},
	}
	for _, tt := range tests {
		if got := secret.Mask(tt.in); got != tt.want {
			t.Errorf("Mask(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFingerprint(t *testing.T) {
	tests := []struct{ in, want string }{
		// The first 4 bytes of SHA-256, in hex: event ids already stored
		// and delivered carry them, so they must not change.
		{"", "e3b0c442"},
		{"sk-1234567890abcdefWXYZ", fingerprintOf("sk-1234567890abcdefWXYZ")},
	}
	for _, tt := range tests {
		if got := secret.Fingerprint(tt.in); got != tt.want || len(got) != 8 {
			t.Errorf("Fingerprint(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if secret.Fingerprint("sk-a-0001") == secret.Fingerprint("sk-a-0002") {
		t.Error("two secrets share a fingerprint")
	}
	if fp := secret.Fingerprint("sk-1234567890abcdefWXYZ"); strings.Contains("sk-1234567890abcdefWXYZ", fp) {
		t.Errorf("fingerprint %q is part of the secret", fp)
	}
}

// fingerprintOf is Fingerprint as a reader would compute it by hand.
func fingerprintOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:8]
}

func TestRedactString(t *testing.T) {
	const plain = "sk-live-0123456789abcdefWXYZ"
	const odd = "sk-live+AbCd/EfGh<IjKl>'MnOp\"==" // every escaper changes it
	q := url.QueryEscape(odd)
	tests := []struct {
		name, secret, text string
	}{
		{"raw", plain, "invalid key " + plain + " refused"},
		{"raw twice", plain, plain + "/" + plain},
		{"query-escaped", odd, "GET /v1/balance?key=" + q + ": connection refused"},
		{"path-escaped", odd, "GET /v1/keys/" + url.PathEscape(odd) + ": 404"},
		{"escaped twice", odd, "next=%2Fv1%3Fkey%3D" + strings.ReplaceAll(q, "%", "%25")},
		{"html-escaped", odd, "<p>" + template.HTMLEscapeString(odd) + "</p>"},
		{"js-escaped", odd, "var k = '" + template.JSEscapeString(odd) + "'"},
		{"json slash", odd, `{"key":"` + strings.ReplaceAll(odd, "/", `\/`) + `"}`},
		{"Go-quoted", odd, fmt.Sprintf("body %q", "key "+odd)},
		{"Go-quoted query", odd, fmt.Sprintf("url %q", "?key="+q)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := secret.RedactString(tt.text, tt.secret)
			if !strings.Contains(got, secret.Mask(tt.secret)) {
				t.Errorf("RedactString(%q) = %q: no mask", tt.text, got)
			}
			// A masked key shows 5 + 4 characters; any longer run of the
			// secret's middle is a leak.
			mid := tt.secret[5 : len(tt.secret)-4]
			for _, f := range []string{tt.secret, url.QueryEscape(mid), url.PathEscape(mid), template.HTMLEscapeString(mid),
				template.JSEscapeString(mid), strings.ReplaceAll(mid, "/", `\/`), quoted(mid)} {
				if strings.Contains(got, f) {
					t.Errorf("RedactString(%q) = %q: still holds %q", tt.text, got, f)
				}
			}
		})
	}
	// A longer form is masked whole before a shorter one inside it: js
	// escapes a leading quote as \', which holds the raw secret.
	const quote = "'sk-live-0123456789abcdefWXYZ"
	if got, want := secret.RedactString("k="+template.JSEscapeString(quote), quote), "k='sk-l...WXYZ"; got != want {
		t.Errorf("RedactString(js-escaped) = %q, want %q", got, want)
	}
	for _, tt := range []struct{ text, secret string }{
		{"nothing to hide", plain},
		{"an empty secret hides nothing: sk-", ""},
	} {
		if got := secret.RedactString(tt.text, tt.secret); got != tt.text {
			t.Errorf("RedactString(%q, %q) = %q, want it unchanged", tt.text, tt.secret, got)
		}
	}
}

func quoted(s string) string { q := strconv.Quote(s); return q[1 : len(q)-1] }

func TestRedact(t *testing.T) {
	const key = "sk-live-0123456789abcdefWXYZ"
	base := fmt.Errorf("upstream said %q: %w", "bad key "+key, fs.ErrPermission)
	tests := []struct {
		name     string
		err      error
		secret   string
		want     string
		sameErr  bool // returned as given
		wantIsFS bool
	}{
		{"masked, still an fs.ErrPermission", base, key, `upstream said "bad key sk-li...WXYZ": permission denied`, false, true},
		{"nil stays nil", nil, key, "", true, false},
		{"no secret, unchanged", base, "", base.Error(), true, true},
		{"secret absent, unchanged", base, "sk-other-9999999999999999", base.Error(), true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := secret.Redact(tt.err, tt.secret)
			if tt.err == nil {
				if got != nil {
					t.Fatalf("Redact(nil) = %v", got)
				}
				return
			}
			if got.Error() != tt.want {
				t.Errorf("Redact = %q, want %q", got, tt.want)
			}
			if (got == tt.err) != tt.sameErr {
				t.Errorf("Redact returned the same error: %v, want %v", got == tt.err, tt.sameErr)
			}
			if errors.Is(got, fs.ErrPermission) != tt.wantIsFS {
				t.Errorf("errors.Is(Redact(...), fs.ErrPermission) = %v", !tt.wantIsFS)
			}
		})
	}
	var ue *url.Error
	if err := secret.Redact(&url.Error{Op: "Get", URL: "http://x/?k=" + key, Err: fs.ErrNotExist}, key); !errors.As(err, &ue) {
		t.Errorf("errors.As lost the *url.Error through Redact: %T", err)
	}
}

func TestRedactBody(t *testing.T) {
	const key = "sk-admin-0123456789abcdefWXYZ"
	tests := []struct{ name, body, secret, want string }{
		{"echoed", `{"error":"key ` + key + ` lacks scope"}`, key, `{"error":"key sk-ad...WXYZ lacks scope"}`},
		{"absent", `{"data":[]}`, key, `{"data":[]}`},
		{"no secret", `{"k":"` + key + `"}`, "", `{"k":"` + key + `"}`},
		// The body is the upstream's bytes; an encoded form is left to the
		// redaction of the error it ends in.
		{"raw only", `{"k":"` + url.QueryEscape(key+"/") + `"}`, key + "/", `{"k":"` + url.QueryEscape(key+"/") + `"}`},
	}
	for _, tt := range tests {
		if got := string(secret.RedactBody([]byte(tt.body), tt.secret)); got != tt.want {
			t.Errorf("%s: RedactBody = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestRedactText(t *testing.T) {
	const (
		rendered = "http://up.example/v1?k=c2stbGl2ZS0wMTIzNDU2Nzg5YWJj"
		shown    = "http://up.example/v1?k=c2stb...WJj"
	)
	base := &url.Error{Op: "Get", URL: rendered, Err: os.ErrDeadlineExceeded}
	tests := []struct {
		name, text, shown, want string
		same                    bool
	}{
		{"replaced", rendered, shown, `Get "` + shown + `": i/o timeout`, false},
		{"absent", "http://other.example/", shown, base.Error(), true},
		{"empty text", "", shown, base.Error(), true},
		{"nothing to change", rendered, rendered, base.Error(), true},
	}
	for _, tt := range tests {
		got := secret.RedactText(base, tt.text, tt.shown)
		if got.Error() != tt.want || (got == error(base)) != tt.same {
			t.Errorf("%s: RedactText = %q (same error %v), want %q (same %v)", tt.name, got, got == error(base), tt.want, tt.same)
		}
		var ue *url.Error
		if !errors.As(got, &ue) || !errors.Is(got, os.ErrDeadlineExceeded) {
			t.Errorf("%s: RedactText lost the error's type: %T", tt.name, got)
		}
	}
	if secret.RedactText(nil, rendered, shown) != nil {
		t.Error("RedactText(nil) is not nil")
	}
}

func TestMayHold(t *testing.T) {
	const plain = "sk-live-0123456789abcdefWXYZ"
	const odd = "sk-live+AbCd/EfGh<IjKl>'MnOp\"=="
	tests := []struct {
		name, text, secret string
		want               bool
	}{
		{"raw", "key " + plain, plain, true},
		{"absent", `{"spend": 1.0}`, plain, false},
		{"a part only", "sk-live-0123", plain, false},
		{"query-escaped", "?key=" + url.QueryEscape(odd), odd, true},
		{"js-escaped", template.JSEscapeString(odd), odd, true},
		{"no plain run: may hold", "anything", "+/=", true},
		{"empty secret", "anything", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := secret.MayHold([]byte(tt.text), tt.secret); got != tt.want {
				t.Errorf("MayHold(%q, %q) = %v, want %v", tt.text, tt.secret, got, tt.want)
			}
			// No means RedactString leaves the text alone.
			if !tt.want && secret.RedactString(tt.text, tt.secret) != tt.text {
				t.Errorf("MayHold(%q, %q) = false, but RedactString changes it", tt.text, tt.secret)
			}
		})
	}
}

// BenchmarkRedactString is the masking of an upstream's answer, run on
// every answer: the common answer does not hold the key.
func BenchmarkRedactString(b *testing.B) {
	const body = `{"user_id":"u-123","spend":1.25,"max_budget":10.0,"key_alias":"team-a","models":[],"expires":null}`
	for _, bb := range []struct{ name, text, secret string }{
		{"plain key, absent", body, "sk-live-0123456789abcdefWXYZ"},
		{"odd key, absent", body, "sk-live+AbCd/EfGh<IjKl>'MnOp\"=="},
		{"plain key, echoed", body + " sk-live-0123456789abcdefWXYZ", "sk-live-0123456789abcdefWXYZ"},
	} {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = secret.RedactString(bb.text, bb.secret)
			}
		})
	}
}
