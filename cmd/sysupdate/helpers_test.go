package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/sysupdate/sysupdate/internal/testbin"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

// runOK runs a sysupdate command in-process and fails the test on error.
func runOK(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if err := run(context.Background(), args, &out, &errb); err != nil {
		t.Fatalf("sysupdate %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

// publishCmd runs the publisher binary (keygen, keyring, publish, delta:
// what a build host does before a device sees anything) and returns its
// output and error.
func publishCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, errOut, err := testbin.Run(testbin.Build(t, testbin.Publisher, ""), args...)
	return out + errOut, err
}

// publishOK runs the publisher binary and fails the test on error.
func publishOK(t *testing.T, args ...string) string {
	t.Helper()
	out, err := publishCmd(t, args...)
	if err != nil {
		t.Fatalf("sysupdate-publish %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

type syncBuffer = testbin.SyncBuffer
