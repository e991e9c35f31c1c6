package machinelock

const abstractSockets = true
