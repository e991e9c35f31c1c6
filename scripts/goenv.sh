# Sourced by the project's scripts and the Makefile's recipes: the Go they
# build and test with. Go 1.27.3 fixes the standard-library vulnerabilities
# govulncheck reports in Go 1.26.8 (net/http, crypto/tls, crypto/x509,
# html/template); the go command takes it from the Go module proxy once
# (about 76 MB) and caches it. go.mod stays at 1.26.8, so a plain `go build`
# with an older Go still works. Set GOTOOLCHAIN yourself to use another one.
export PATH="/usr/local/go/bin:$PATH"
export GOTOOLCHAIN="${GOTOOLCHAIN:-go1.27.3}"
