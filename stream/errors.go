package stream

import (
	"errors"
	"fmt"
	"io"
)

// Sentinel errors callers branch on; match them with errors.Is.
var (
	// ErrFormat: the stream is malformed (corrupt or not a stream).
	ErrFormat = errors.New("stream: malformed stream")
	// ErrVersion: the stream needs a newer sysupdate.
	ErrVersion = errors.New("stream: unsupported format version")
	// ErrTruncated: the stream ended early.
	ErrTruncated = errors.New("stream: truncated stream")
	// ErrHeaderMismatch: the header is not the one signed metadata promised.
	ErrHeaderMismatch = errors.New("stream: header hash differs from the expected one")
	// ErrCorrupt: stream bytes do not match the hash the header authenticated.
	ErrCorrupt = errors.New("stream: data does not match its authenticated hash")
	// ErrSourceMismatch: the source image is not the one the delta was built from.
	ErrSourceMismatch = errors.New("stream: source image differs from the one the delta expects")
	// ErrNoSource: a delta was applied without a source image.
	ErrNoSource = errors.New("stream: delta needs a source image")
	// ErrBudget: the stream asks for more memory than the applier allows.
	ErrBudget = errors.New("stream: stream exceeds this device's buffer budget")
	// ErrTargetTooSmall: the target cannot hold the image.
	ErrTargetTooSmall = errors.New("stream: target too small")
	// ErrTargetMismatch: the target's content differs from what the header says.
	ErrTargetMismatch = errors.New("stream: target content differs from the stream's target hash")
	// ErrTooLong: the stream is longer than allowed or declared.
	ErrTooLong = errors.New("stream: stream longer than declared")
)

// Fault says which party an error is attributed to.
type Fault string

// Faults.
const (
	FaultStream Fault = "stream" // the update stream is corrupt, truncated or wrong
	FaultSource Fault = "source" // the source (active slot) image is not what the delta expects
	FaultTarget Fault = "target" // the target (inactive slot) could not be written or read back
)

// advice tells the user what to do about a fault.
func (f Fault) advice() string {
	switch f {
	case FaultStream:
		return "download the stream again; if it keeps failing, the published file is damaged"
	case FaultSource:
		return "the active slot differs from the release this delta was built for: install the full-image stream instead"
	case FaultTarget:
		return "check the target device (size, write errors, dmesg)"
	}
	return ""
}

// FormatError reports a malformed preamble or header at a stream offset.
type FormatError struct {
	Offset int64  // byte offset in the stream
	Msg    string // what is wrong
	Err    error  // ErrFormat, ErrVersion or ErrTruncated
}

func (e *FormatError) Error() string {
	advice := FaultStream.advice()
	if e.Err == ErrVersion {
		// The stream is fine; this reader is too old for it.
		advice = "the stream is not damaged: install the full-image stream (Build writes full streams in format 1) or update sysupdate"
	}
	return fmt.Sprintf("stream header at byte %d: %s (%v); %s", e.Offset, e.Msg, e.Err, advice)
}

func (e *FormatError) Unwrap() error { return e.Err }

// OpError reports a failure while applying or verifying one op.
type OpError struct {
	Op     int   // index of the op in the stream, from 0
	Offset int64 // target offset the op writes
	Fault  Fault // who is at fault
	Err    error
}

func (e *OpError) Error() string {
	return fmt.Sprintf("op %d (target offset %d): %s fault: %v; %s", e.Op, e.Offset, e.Fault, e.Err, e.Fault.advice())
}

func (e *OpError) Unwrap() error { return e.Err }

// truncated maps an end of input to ErrTruncated. Only a bare EOF is the
// stream ending: an error that merely wraps one (a download that gave up
// after its connection kept closing early) keeps its cause, so an outage is
// reported as an outage and not as a short stream.
func truncated(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: %v", ErrTruncated, io.ErrUnexpectedEOF)
	}
	return err
}
