//go:build race

package render

// memoryFactor scales the memory bounds of tests: the race detector's shadow memory
// makes every process several times larger.
const memoryFactor = 4
