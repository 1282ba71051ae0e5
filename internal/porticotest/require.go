package porticotest

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// InteropEnv names the environment variable that turns a missing program
// into a test failure: set it to 1 where every test must run (./test.sh
// does).
const InteropEnv = "PORTICO_REQUIRE_INTEROP"

// RequireProgram returns the path of executable name, found on PATH. When it
// is missing the test is skipped, or fails when PORTICO_REQUIRE_INTEROP=1.
func RequireProgram(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "%v", err)
	}
	return path
}

// Missing reports that something a test needs from the machine (a program,
// a plugin, a configuration file) is not there: the test is skipped, or
// fails when PORTICO_REQUIRE_INTEROP=1. It does not return.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(InteropEnv) == "1" {
		t.Fatalf("%s (required: %s=1)", msg, InteropEnv)
	}
	t.Skipf("%s (set %s=1 to make this a failure)", msg, InteropEnv)
}
