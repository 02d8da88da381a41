package config

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/connstring"
)

// validateURI checks the connection string's options as the driver will
// read them, so a bad option is a usage error (exit 2) and not a failure
// to connect that a supervisor would restart for ever. A mongodb+srv:// URI
// is checked without its DNS lookup: a name that does not resolve now is
// an outage, not bad configuration.
//
// The driver ignores an option it does not know, keeps the last of an
// option given twice, and takes any string as a write concern, a read
// concern level or a compressor: a misspelt or repeated one leaves the
// setting meant off without a word, so those are refused here.
func validateURI(u *url.URL) error {
	opts, err := uriOptionPairs(u.RawQuery)
	if err != nil {
		return err
	}
	v := *u
	if v.Scheme == "mongodb+srv" {
		if v.Port() != "" || strings.Contains(v.Host, ",") || v.Hostname() == "" {
			return errors.New("a mongodb+srv:// URI names exactly one host, without a port")
		}
		var kept []string
		for _, o := range opts {
			if !strings.EqualFold(o.name, "srvServiceName") && !strings.EqualFold(o.name, "srvMaxHosts") {
				kept = append(kept, o.raw)
			}
		}
		v.Scheme, v.RawQuery = "mongodb", strings.Join(kept, "&")
	}
	if err := options.Client().ApplyURI(v.String()).Validate(); err != nil {
		return driverURIError(err, opts)
	}
	cs, err := connstring.Parse(v.String())
	if err != nil {
		return driverURIError(err, opts)
	}
	if len(cs.UnknownOptions) > 0 {
		var unknown []string
		for _, o := range opts {
			if _, ok := cs.UnknownOptions[strings.ToLower(o.name)]; ok && !slices.Contains(unknown, o.name) {
				unknown = append(unknown, o.name)
			}
		}
		slices.Sort(unknown)
		var named []string
		for _, k := range unknown {
			named = append(named, fmt.Sprintf("unknown option %q%s", k, didYouMean(k, uriOptions, "")))
		}
		return fmt.Errorf("%s (the driver would ignore it)", strings.Join(named, "; "))
	}
	if cs.WString != "" && cs.WString != "majority" && didYouMean(cs.WString, []string{"majority"}, "") != "" {
		// Any other name is a custom write concern of the replica set
		// (settings.getLastErrorModes); one this close is a typo, which
		// the server would refuse on every write.
		return fmt.Errorf("w=%s, did you mean w=majority? (a number, majority, or a write concern mode the replica set defines)", cs.WString)
	}
	if l := cs.ReadConcernLevel; l != "" && !slices.Contains(readConcernLevels, l) {
		return fmt.Errorf("readConcernLevel=%s%s (want one of %s)", l, didYouMean(l, readConcernLevels, "readConcernLevel="), strings.Join(readConcernLevels, ", "))
	}
	for _, c := range cs.Compressors {
		if !slices.Contains(compressors, c) {
			return fmt.Errorf("compressors: %q is not a compressor the driver has (%s)", c, strings.Join(compressors, ", "))
		}
	}
	return nil
}

// uriOption is one option of a connection string: its name unescaped,
// its value unescaped and the pair as written.
type uriOption struct{ name, value, raw string }

// uriOptionPairs reads the options as the driver does: pairs separated by
// & or ;, names in any case. A name given twice is refused (the driver
// keeps the last), except readPreferenceTags, a list of tag sets. A bad
// escape is named by its option, never quoted: the value may be a secret.
func uriOptionPairs(rawQuery string) ([]uriOption, error) {
	var opts []uriOption
	first := map[string]string{} // lower-case name → as first written
	for _, raw := range strings.FieldsFunc(rawQuery, func(r rune) bool { return r == '&' || r == ';' }) {
		k, val, _ := strings.Cut(raw, "=")
		name, err := url.QueryUnescape(k)
		if err != nil {
			return nil, errors.New("an option name holds a bad %-escape")
		}
		value, err := url.QueryUnescape(val)
		if err != nil {
			return nil, fmt.Errorf("option %q: its value holds a bad %%-escape", name)
		}
		lower := strings.ToLower(name)
		if prev, dup := first[lower]; dup && lower != "readpreferencetags" {
			as := ""
			if prev != name {
				as = fmt.Sprintf(" (as %q and %q)", prev, name)
			}
			return nil, fmt.Errorf("option %q given twice%s: the driver would keep only the last", prev, as)
		}
		first[lower] = name
		opts = append(opts, uriOption{name, value, raw})
	}
	return opts, nil
}

// secretOptions carry a secret in their value (a key file's password, an
// AWS session token): a driver error that quotes them is not shown as is.
var secretOptions = []string{"tlscertificatekeyfilepassword", "authmechanismproperties"}

// driverURIError is the driver's complaint about the URI, without the
// values of the options that carry a secret.
func driverURIError(err error, opts []uriOption) error {
	msg := strings.TrimPrefix(err.Error(), "error parsing uri: ")
	for _, o := range opts {
		if !slices.Contains(secretOptions, strings.ToLower(o.name)) {
			continue
		}
		for _, v := range []string{o.raw, o.value, strings.TrimPrefix(o.raw, o.name+"=")} {
			if len(v) >= 4 { // shorter, it would mangle the message more than it hides
				msg = strings.ReplaceAll(msg, v, o.name+"=xxxxx")
			}
		}
	}
	return errors.New(msg)
}

var (
	readConcernLevels = []string{"local", "available", "majority", "linearizable", "snapshot"}
	compressors       = []string{"snappy", "zlib", "zstd"}
)

// uriOptions are the options of the connection string specification as
// written in the driver's documentation, only to suggest the right
// spelling: the driver itself decides which are known (TestURIOptionsKnown).
var uriOptions = []string{
	"appName", "authMechanism", "authMechanismProperties", "authSource", "compressors", "connect",
	"connectTimeoutMS", "directConnection", "heartbeatFrequencyMS", "journal", "loadBalanced",
	"localThresholdMS", "maxConnecting", "maxIdleTimeMS", "maxPoolSize", "maxStalenessSeconds",
	"minPoolSize", "readConcernLevel", "readPreference", "readPreferenceTags", "replicaSet",
	"retryReads", "retryWrites", "serverMonitoringMode", "serverSelectionTimeoutMS", "socketTimeoutMS",
	"srvMaxHosts", "srvServiceName", "ssl", "timeoutMS", "tls", "tlsCAFile", "tlsCertificateKeyFile",
	"tlsCertificateKeyFilePassword", "tlsDisableCertificateRevocationCheck", "tlsDisableOCSPEndpointCheck",
	"tlsInsecure", "w", "zlibCompressionLevel", "zstdCompressionLevel",
}
