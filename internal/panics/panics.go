// Package panics turns a panic into an error, so that no repo's input can end deployd:
// a deployment that panics fails with its own error record, and the others go on.
package panics

import (
	"fmt"
	"runtime/debug"
)

// Error is a panic caught and returned as an error. Error() says what panicked; Stack
// is for the debug log, never for a record or an API answer.
type Error struct {
	// Value is what was passed to panic.
	Value any
	// Stack is the panicking goroutine's stack.
	Stack []byte
}

func (e *Error) Error() string {
	return fmt.Sprintf("deployd panicked: %v (a bug in deployd: the stack is in its debug log)", e.Value)
}

// Unwrap returns the panic's value when it was an error (a runtime.Error for a nil
// dereference), so errors.As finds it.
func (e *Error) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// New returns the *Error of a panic's value, with the current goroutine's stack: for a
// deferred function that calls recover itself (recover works only there).
func New(v any) error {
	return &Error{Value: v, Stack: debug.Stack()}
}

// Recover, deferred directly, turns a panic of the deferring function into *err (an
// *Error); *err is left alone when there was none. A panic is caught only in the
// goroutine that defers Recover: each goroutine a deployment starts defers its own.
func Recover(err *error) {
	if v := recover(); v != nil {
		*err = &Error{Value: v, Stack: debug.Stack()}
	}
}
