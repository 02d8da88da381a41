package cli

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
// The driver ignores an option it does not know and takes any string as a
// write concern, a read concern level or a compressor: a misspelt one
// leaves the setting meant off without a word, so those are refused here.
func validateURI(u *url.URL) error {
	v := *u
	if v.Scheme == "mongodb+srv" {
		if v.Port() != "" || strings.Contains(v.Host, ",") || v.Hostname() == "" {
			return errors.New("a mongodb+srv:// URI names exactly one host, without a port")
		}
		q := v.Query()
		for k := range q {
			if strings.EqualFold(k, "srvServiceName") || strings.EqualFold(k, "srvMaxHosts") {
				q.Del(k)
			}
		}
		v.Scheme, v.RawQuery = "mongodb", q.Encode()
	}
	if err := options.Client().ApplyURI(v.String()).Validate(); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "error parsing uri: "))
	}
	cs, err := connstring.Parse(v.String())
	if err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "error parsing uri: "))
	}
	if len(cs.UnknownOptions) > 0 {
		var unknown []string
		for k := range v.Query() {
			if _, ok := cs.UnknownOptions[strings.ToLower(k)]; ok {
				unknown = append(unknown, k)
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
