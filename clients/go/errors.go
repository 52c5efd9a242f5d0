package lars

import "errors"

// The errors of a request. Every error a Client returns either is one of
// these (test with errors.Is; the returned error may wrap it with details)
// or is a socket error from package net (e.g. one wrapping
// syscall.ECONNREFUSED when nothing listens on the agent port).
var (
	// ErrNoExist: the agent answered RET_NOEXIST (the key is unknown; the
	// agent starts pulling it from the dns), or RegInit still saw no host
	// after its attempts.
	ErrNoExist = errors.New("lars: no host exists for this key (yet)")
	// ErrOverload: the agent answered RET_OVERLOAD: every host of the key is
	// overloaded and no probe is due.
	ErrOverload = errors.New("lars: every host is overloaded")
	// ErrSystem: the agent answered RET_SYSTEM_ERROR, an unknown return code,
	// or a success without a valid host.
	ErrSystem = errors.New("lars: agent system error")
	// ErrTimeout: no matching reply arrived within the receive timeout.
	ErrTimeout = errors.New("lars: no reply from the agent within the timeout")
	// ErrInvalidArgument: an argument or option is out of range (a negative
	// id, an ip that is not a dotted IPv4 quad, a port outside 1..65535, ...).
	// Returned at once, before anything is sent.
	ErrInvalidArgument = errors.New("lars: invalid argument")
)

// Return codes of the original API (LarsRetCode), for code ported from it.
const (
	RetSucc        = 0
	RetOverload    = 1
	RetSystemError = 2
	RetNoExist     = 3
)

// RetCode maps an error of this package to the original API's return code:
// nil is RetSucc, ErrOverload RetOverload, ErrNoExist RetNoExist, anything
// else (timeouts, socket errors, bad input) RetSystemError.
func RetCode(err error) int {
	switch {
	case err == nil:
		return RetSucc
	case errors.Is(err, ErrOverload):
		return RetOverload
	case errors.Is(err, ErrNoExist):
		return RetNoExist
	default:
		return RetSystemError
	}
}
