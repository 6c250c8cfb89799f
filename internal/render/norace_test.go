//go:build !race

package render

// memoryFactor scales the memory bounds of tests (see race_test.go).
const memoryFactor = 1
