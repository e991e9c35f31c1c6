//go:build !linux

package freeport

const abstractSockets = false
