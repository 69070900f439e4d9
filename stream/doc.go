// Package stream defines sysupdate's update stream: a signed-header,
// hash-chained sequence of operations that turns a source image into a
// target image (a delta), or writes a target from nothing (a full stream).
//
// See docs/stream-format.md for the byte layout.
package stream
