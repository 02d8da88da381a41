package checker

import (
	"strings"

	"github.com/spendchecker/spendchecker/rotation/history"
	"github.com/spendchecker/spendchecker/spend"
)

// maskedError is err with every occurrence of a secret masked in its text;
// errors.Is and As still see the original.
type maskedError struct {
	err error
	msg string
}

func (e *maskedError) Error() string { return e.msg }
func (e *maskedError) Unwrap() error { return e.err }

// maskSecret masks the key in err's text (first 5 and last 4 characters):
// an upstream or a gateway may echo the token it was given.
func maskSecret(err error, secret string) error {
	if err == nil || secret == "" {
		return err
	}
	// The encoded forms too (percent-encoded in a URL, escaped in a quoted
	// body): spend.RedactString knows them.
	msg := spend.RedactString(strings.ReplaceAll(err.Error(), secret, history.Mask(secret)), secret)
	if msg == err.Error() {
		return err
	}
	return &maskedError{err: err, msg: msg}
}
