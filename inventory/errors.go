package inventory

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/gophercloud/gophercloud/v2"
)

// Error reasons, as in openstack_vm_api_errors_total{reason}.
const (
	ReasonAuth    = "auth"
	ReasonTimeout = "timeout"
	Reason4xx     = "http_4xx"
	Reason5xx     = "http_5xx"
	ReasonDecode  = "decode"
	ReasonNetwork = "network"
)

// Reasons lists every reason, so counters can start at zero.
var Reasons = []string{ReasonAuth, ReasonTimeout, Reason4xx, Reason5xx, ReasonDecode, ReasonNetwork}

type authError struct{ err error }

func (e *authError) Error() string { return "authenticating: " + e.err.Error() }
func (e *authError) Unwrap() error { return e.err }

type decodeError struct{ err error }

func (e *decodeError) Error() string { return e.err.Error() }
func (e *decodeError) Unwrap() error { return e.err }

// Classify names the cause of a failed refresh.
func Classify(err error) string {
	if err == nil {
		return ""
	}
	var re *RefreshError
	if errors.As(err, &re) {
		return re.Reason
	}
	var pe *policyError
	if errors.As(err, &pe) {
		return ReasonAuth
	}
	if isTimeout(err) {
		return ReasonTimeout
	}
	if reauth := reauthCause(err); reauth != nil {
		// The token was refused and a new login failed: the login's own
		// failure says whether Keystone is down or the credentials are bad.
		if r := Classify(reauth); r == ReasonTimeout || r == Reason5xx || (r == ReasonNetwork && isNetwork(reauth)) {
			return r
		}
		return ReasonAuth
	}
	if code := statusCode(err); code != 0 {
		switch {
		case code == http.StatusUnauthorized || code == http.StatusForbidden:
			return ReasonAuth
		case code >= 500:
			return Reason5xx
		default:
			return Reason4xx
		}
	}
	var endpoint gophercloud.ErrEndpointNotFound
	var endpointPtr *gophercloud.ErrEndpointNotFound
	if errors.As(err, &endpoint) || errors.As(err, &endpointPtr) {
		return ReasonAuth
	}
	var de *decodeError
	var syntax *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &de) || errors.Is(err, errBodyTooLarge) || errors.As(err, &syntax) || errors.As(err, &typeErr) {
		return ReasonDecode
	}
	var ae *authError
	if errors.As(err, &ae) && !isNetwork(ae.err) {
		return ReasonAuth
	}
	return ReasonNetwork
}

func reauthCause(err error) error {
	var v gophercloud.ErrUnableToReauthenticate
	if errors.As(err, &v) {
		return v.ErrReauth
	}
	var p *gophercloud.ErrUnableToReauthenticate
	if errors.As(err, &p) {
		return p.ErrReauth
	}
	return nil
}

// tlsHint adds the way out to a failed certificate check; Go's own message
// ("x509: certificate signed by unknown authority") names the problem.
func tlsHint(err error, endpoint string) error {
	var unknown x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	switch {
	case errors.As(err, &unknown):
		return fmt.Errorf("%w (the TLS certificate of %s is signed by a CA this host does not trust: "+
			"add that CA with openstack.ca_file, OS_CACERT or cacert in clouds.yaml)", err, redactURL(endpoint))
	case errors.As(err, &verify):
		return fmt.Errorf("%w (the TLS certificate of %s was rejected)", err, redactURL(endpoint))
	}
	return err
}

func isNetwork(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr)
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}

// statusCode digs the HTTP status out of gophercloud's errors, which come
// as values or pointers and wrapped in re-authentication errors.
func statusCode(err error) int {
	var v gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &v) {
		return v.Actual
	}
	var p *gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &p) {
		return p.Actual
	}
	var after gophercloud.ErrErrorAfterReauthentication
	if errors.As(err, &after) && after.ErrOriginal != nil {
		return statusCode(after.ErrOriginal)
	}
	var afterPtr *gophercloud.ErrErrorAfterReauthentication
	if errors.As(err, &afterPtr) && afterPtr.ErrOriginal != nil {
		return statusCode(afterPtr.ErrOriginal)
	}
	return 0
}

// policyError is a refusal by policy that no retry will cure.
type policyError struct{ err error }

func (e *policyError) Error() string { return e.err.Error() }
func (e *policyError) Unwrap() error { return e.err }

// RefreshError is a failed refresh: its cause, and its message with secrets
// redacted.
type RefreshError struct {
	Reason string
	Msg    string
}

func (e *RefreshError) Error() string { return e.Msg }
