package main

import (
	"embed"
	"io/fs"
)

// The runbooks travel in the binary: the report prints each issue's
// mitigation without a checkout at hand.
//
//go:embed docs/runbooks/*.md
var runbookFiles embed.FS

func runbooks() fs.FS {
	sub, err := fs.Sub(runbookFiles, "docs/runbooks")
	if err != nil {
		panic(err)
	}
	return sub
}
