package secret

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// TestFormsHoldPlainRun checks what the shortcut in RedactString rests on:
// every form of a secret holds its longest unreserved run unchanged, so a
// text without that run holds no form. A new escaper in forms that touches
// letters, digits or -._~ fails here.
func TestFormsHoldPlainRun(t *testing.T) {
	secrets := []string{
		"sk-live-0123456789abcdefWXYZ",
		"sk-live+AbCd/EfGh<IjKl>'MnOp\"==",
		"'sk-live-0123456789abcdefWXYZ",
		"a~b.c_d-e f%g&h=i\\j\x00k\u00e9l\u2028m`n",
		"++//==",
		"é",
	}
	// Random secrets over a small alphabet holding every kind of character
	// an escaper treats specially.
	const alphabet = "aZ09-._~ +/%&=<>'\"\\`\x00\x7f\té\u2028"
	r := rand.New(rand.NewPCG(1, 2))
	runes := []rune(alphabet)
	for range 2000 {
		var b strings.Builder
		for range 1 + r.IntN(24) {
			b.WriteRune(runes[r.IntN(len(runes))])
		}
		secrets = append(secrets, b.String())
	}
	for _, s := range secrets {
		run := plainRun(s)
		for _, f := range forms(s) {
			if !strings.Contains(f, run) {
				t.Fatalf("secret %q: form %q does not hold its plain run %q", s, f, run)
			}
		}
	}
}

func TestPlainRun(t *testing.T) {
	tests := []struct{ s, want string }{
		{"", ""},
		{"sk-live_0.9~Z", "sk-live_0.9~Z"},
		{"ab/cdef+gh", "cdef"},
		{"abc/def", "abc"}, // the first of two equal runs
		{"+/=", ""},
		{"xé", "x"},
	}
	for _, tt := range tests {
		if got := plainRun(tt.s); got != tt.want {
			t.Errorf("plainRun(%q) = %q, want %q", tt.s, got, tt.want)
		}
	}
}
