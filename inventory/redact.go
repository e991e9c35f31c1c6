package inventory

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"
)

// Redactor replaces secret values in text; it guards every error message
// that may quote a request or response. Each secret is looked for as it is
// and as a request carries it: JSON-escaped (a login body) and URL-escaped
// (a query or a form), since a server or proxy that echoes the request
// echoes those.
type Redactor struct {
	secrets []string
	// current returns secrets that change over time, such as the token.
	current func() string
}

// newRedactor redacts the given values and whatever current returns at the
// time of each call (current may be nil).
func newRedactor(current func() string, secrets ...string) *Redactor {
	r := &Redactor{current: current}
	for _, s := range secrets {
		r.secrets = appendForms(r.secrets, s)
	}
	return r
}

// appendForms appends s and its escaped forms, longest first so that no
// form is replaced in part by a shorter one. Values under 4 bytes are not
// secrets worth hiding (and would hide too much).
func appendForms(forms []string, s string) []string {
	if len(s) < 4 {
		return forms
	}
	j, _ := json.Marshal(s)
	for _, f := range []string{s, string(j[1 : len(j)-1]), url.QueryEscape(s), url.PathEscape(s)} {
		if !slices.Contains(forms, f) {
			forms = append(forms, f)
		}
	}
	slices.SortStableFunc(forms, func(a, b string) int { return len(b) - len(a) })
	return forms
}

// all returns every form of every secret, the current ones included.
func (r *Redactor) all() []string {
	if r == nil {
		return nil
	}
	if r.current == nil {
		return r.secrets
	}
	return appendForms(slices.Clip(r.secrets), r.current())
}

// MaxErrorBytes bounds an error message kept in Health or logged:
// gophercloud puts the whole response body into its errors.
const MaxErrorBytes = 2048

// Message returns err's text cut to MaxErrorBytes, at a rune boundary and
// with a note of what was cut, and with secrets redacted. It cuts first, so
// that a huge error page is not searched whole, and then drops the start of
// a secret the cut may have left at the end.
func (r *Redactor) Message(err error) string {
	if err == nil {
		return ""
	}
	s, secrets := err.Error(), r.all()
	if len(s) <= MaxErrorBytes {
		return redact(s, secrets)
	}
	cut := MaxErrorBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	head := dropPartialSecret(s[:cut], secrets)
	return redact(head, secrets) + fmt.Sprintf(" … (%d bytes cut)", len(s)-len(head))
}

// dropPartialSecret removes a secret's beginning from the end of s.
func dropPartialSecret(s string, secrets []string) string {
	for dropped := true; dropped; {
		dropped = false
		for _, secret := range secrets {
			for k := min(len(secret)-1, len(s)); k > 0; k-- {
				if strings.HasSuffix(s, secret[:k]) {
					s, dropped = s[:len(s)-k], true
					break
				}
			}
		}
	}
	return s
}

// String returns s with every secret replaced by "<redacted>".
func (r *Redactor) String(s string) string { return redact(s, r.all()) }

func redact(s string, secrets []string) string {
	for _, secret := range secrets {
		s = strings.ReplaceAll(s, secret, "<redacted>")
	}
	return s
}
