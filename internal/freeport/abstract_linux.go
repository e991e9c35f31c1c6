package freeport

const abstractSockets = true
