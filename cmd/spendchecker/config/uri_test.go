package config

import (
	"errors"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/connstring"
)

// A connection string option the driver does not know, or a value that
// can only be a typo, is bad configuration (exit 2) naming it: the driver
// itself ignores an unknown option, so the setting meant is silently off.
func TestMongoURIOptions(t *testing.T) {
	tests := []struct {
		uri  string
		want []string // in the one-line message; none: accepted
	}{
		{"mongodb://h/db?replicaSet=rs0&w=majority&readConcernLevel=majority&compressors=zstd,snappy&retryWrites=false", nil},
		{"mongodb://h/db?w=2&journal=true&appName=x&authSource=admin", nil},
		// A custom write concern mode of the replica set (settings.getLastErrorModes).
		{"mongodb://h/db?w=multiDC", nil},
		{"mongodb+srv://cluster.example/db?srvServiceName=mongodb&srvMaxHosts=2&tls=true", nil},
		{"mongodb://h/db?replicaSett=rs0", []string{`unknown option "replicaSett"`, "did you mean replicaSet?"}},
		{"mongodb://h/db?replicaSet=rs0&serverSelectionTimeoutMs=100&retryWritess=true", []string{`unknown option "retryWritess"`, "did you mean retryWrites?"}},
		{"mongodb+srv://cluster.example/db?replicaSett=rs0", []string{`unknown option "replicaSett"`}},
		{"mongodb://h/db?frobnicate=1", []string{`unknown option "frobnicate"`}},
		{"mongodb://h/db?w=majorityy", []string{`w=majorityy`, "did you mean w=majority?"}},
		{"mongodb://h/db?w=Majority", []string{`w=Majority`, "did you mean w=majority?"}},
		{"mongodb://h/db?readConcernLevel=majorityy", []string{`readConcernLevel=majorityy`, "majority"}},
		{"mongodb://h/db?compressors=zstd,snapy", []string{`compressors`, `"snapy"`}},
		// Known options with a bad value, refused by the driver: still exit 2.
		{"mongodb://h/db?journal=yes", []string{"journal"}},
		{"mongodb://h/db?w=-1", []string{`"w"`}},
		{"mongodb://h/db?readPreference=primaryy", []string{"primaryy"}},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			_, err := Parse([]string{"--mongo-uri", tt.uri})
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ue *UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("err %v, want a usage error (exit 2)", err)
			}
			for _, w := range tt.want {
				if msg := err.Error(); !strings.Contains(msg, w) || strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "--mongo-uri") {
					t.Errorf("message %q: want one line about --mongo-uri containing %s", msg, w)
				}
			}
		})
	}
}

// The suggestions name options the driver knows.
func TestURIOptionsKnown(t *testing.T) {
	for _, o := range uriOptions {
		cs, err := connstring.Parse("mongodb://h/?" + o + "=1")
		if err == nil && len(cs.UnknownOptions) > 0 {
			t.Errorf("%s is not an option of the driver", o)
		}
	}
}

// The options are checked as the driver reads them: pairs separated by &
// or ;, names in any case, the last of a repeated option winning. An
// option given twice is refused (the driver would drop the first without
// a word), a misspelt one next to a ; is named, a scheme the driver does
// not take is exit 2 before connecting, and no message shows a secret an
// option carries.
func TestMongoURIAsTheDriverReadsIt(t *testing.T) {
	const pw, secret = "S3CRETPW", "OPTSECRET"
	tests := []struct {
		uri  string
		want []string // in the one-line message; none: accepted
	}{
		{"mongodb://h/db?replicaSet=a&replicaSet=b", []string{`"replicaSet"`, "twice"}},
		{"mongodb://h/db?replicaSet=a&REPLICASET=b", []string{`"replicaSet"`, `"REPLICASET"`, "twice"}},
		{"mongodb://h/db?w=majority&w=1", []string{`"w"`, "twice"}},
		{"mongodb://h/db?w=majority;w=1", []string{`"w"`, "twice"}},
		{"mongodb+srv://cluster.example/db?tls=true&tls=false", []string{`"tls"`, "twice"}},
		{"mongodb://h/db?replicaSett=rs0;w=majority", []string{`unknown option "replicaSett"`, "did you mean replicaSet?"}},
		{"mongodb+srv://cluster.example/db?authSource=admin;replicaSett=rs0", []string{`unknown option "replicaSett"`}},
		{"MONGODB://h/db", []string{"mongodb://"}},
		{"Mongodb+srv://cluster.example/db", []string{"mongodb+srv://"}},
		{"mongodb://u:" + pw + "@h/db?tlsCertificateKeyFilePassword=" + secret + "%zz", []string{"tlsCertificateKeyFilePassword"}},
		{"mongodb://u:" + pw + "@h/db?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:" + secret + "%zz", []string{"authMechanismProperties"}},
		// Accepted: ; as the separator, a repeated readPreferenceTags (a
		// list of tag sets by the specification).
		{"mongodb://h/db?w=majority;journal=true", nil},
		{"mongodb://h/db?readPreference=secondary&readPreferenceTags=dc:ny&readPreferenceTags=", nil},
		{"mongodb+srv://cluster.example/db?srvServiceName=mongodb;tls=true", nil},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			_, err := Parse([]string{"--mongo-uri", tt.uri})
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ue *UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("err %v, want a usage error (exit 2)", err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || strings.Contains(msg, pw) || strings.Contains(msg, secret) {
				t.Errorf("message %q: want one line without a secret", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %s", msg, w)
				}
			}
		})
	}
}
