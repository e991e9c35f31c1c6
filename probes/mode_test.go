package probes

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
)

// The choice of socket in auto mode, with the kernel's answers scripted;
// loopback_test.go and lab_test.go open real sockets in auto mode.
func TestOpenModeAuto(t *testing.T) {
	raw, dgram := &socket{privileged: true}, &socket{}
	refused := func(privileged bool) error { return permissionErr(privileged, syscall.EPERM) }
	other := errors.New("address family not supported")
	for _, tc := range []struct {
		name          string
		opts          Options
		rawErr        error
		dgramErr      error
		wantSock      *socket
		wantPriv      bool
		wantTries     string
		wantErr       error
		wantErrSubstr []string
	}{
		{name: "auto, raw allowed", opts: Options{Auto: true}, wantSock: raw, wantPriv: true, wantTries: "[true]"},
		{name: "auto, raw refused", opts: Options{Auto: true}, rawErr: refused(true),
			wantSock: dgram, wantPriv: false, wantTries: "[true false]"},
		{name: "auto, both refused", opts: Options{Auto: true}, rawErr: refused(true), dgramErr: refused(false),
			wantTries: "[true false]", wantErr: ErrPermission,
			wantErrSubstr: []string{"mode auto", "CAP_NET_RAW", "setcap cap_net_raw+ep", "AmbientCapabilities", "NET_RAW",
				"ping_group_range", "sysctl -w net.ipv4.ping_group_range"}},
		{name: "auto, raw fails otherwise", opts: Options{Auto: true}, rawErr: other, wantTries: "[true]", wantErr: other},
		{name: "auto, raw refused, datagram fails otherwise", opts: Options{Auto: true}, rawErr: refused(true), dgramErr: other,
			wantTries: "[true false]", wantErr: other},
		{name: "privileged refused: no fallback", opts: Options{Privileged: true}, rawErr: refused(true),
			wantTries: "[true]", wantErr: ErrPermission, wantErrSubstr: []string{"setcap", "mode: unprivileged"}},
		{name: "unprivileged", opts: Options{}, wantSock: dgram, wantPriv: false, wantTries: "[false]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tries []bool
			sock, priv, err := openMode(&tc.opts, func(privileged bool) (*socket, error) {
				tries = append(tries, privileged)
				if privileged {
					if tc.rawErr != nil {
						return nil, tc.rawErr
					}
					return raw, nil
				}
				if tc.dgramErr != nil {
					return nil, tc.dgramErr
				}
				return dgram, nil
			})
			if fmt.Sprint(tries) != tc.wantTries {
				t.Errorf("tried privileged %v, want %s", tries, tc.wantTries)
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || sock != nil {
					t.Fatalf("got %v, %v; want error %v", sock, err, tc.wantErr)
				}
				for _, s := range tc.wantErrSubstr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error does not say %q: %v", s, err)
					}
				}
				return
			}
			if err != nil || sock != tc.wantSock || priv != tc.wantPriv {
				t.Errorf("got socket %p privileged %v err %v; want %p %v", sock, priv, err, tc.wantSock, tc.wantPriv)
			}
		})
	}
}
