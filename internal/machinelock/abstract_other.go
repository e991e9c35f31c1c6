//go:build !linux

package machinelock

const abstractSockets = false
