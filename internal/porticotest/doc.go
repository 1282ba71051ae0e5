// Package porticotest holds what Portico's tests share, as net/http/httptest
// does for net/http: a twin of the outside world used only by _test.go files,
// never by the server itself.
//
//   - WaitFor polls a condition until a deadline: the one way tests wait for
//     something that has no channel to wait on.
//   - LogRecorder is an slog.Handler that keeps the records it gets and lets a
//     test wait for one that matches.
//   - RequireProgram and Missing guard tests that need an external program
//     (nginx, uwsgi, python3): they skip, or with PORTICO_REQUIRE_INTEROP=1
//     fail, so that a machine meant to run every test cannot pass by skipping.
//   - StartNginx and StartRedis run a real nginx or redis-server for the
//     length of a test; ReadFromRecorder counts the ReadFrom calls that
//     reach a response writer.
//
// The package imports no other portico package, so that every package's
// tests may use it (internal/app's import rules check this).
package porticotest
