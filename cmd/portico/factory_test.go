//go:build linux

// End-to-end tests of app factories called with literal arguments
// (gunicorn's `module:create_app('testing')`).

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os/exec"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

const flaskFactory = `from flask import Flask, jsonify


def create_app(config_name, debug=False, extra=None):
    app = Flask(__name__)
    app.config["NAME"] = config_name
    app.config["EXTRA"] = extra

    @app.route("/")
    def index():
        return jsonify(name=app.config["NAME"], debug=debug, extra=app.config["EXTRA"])

    return app
`

const plainFactory = `import json


class factories:
    @staticmethod
    def make(greeting, *rest, times=1):
        body = json.dumps({"greeting": greeting * times, "rest": list(rest)}).encode()

        def application(environ, start_response):
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]

        return application
`

func TestFactoryArguments(t *testing.T) {
	python := needPython(t, "flask")
	dir := t.TempDir()
	writeFile(t, dir, "flaskfactory.py", flaskFactory)
	writeFile(t, dir, "plain.py", plainFactory)
	cases := []struct{ spec, want string }{
		{`flaskfactory:create_app('testing')`, `{"debug":false,"extra":null,"name":"testing"}`},
		{`flaskfactory:create_app("prod", debug=True, extra={"a": [1, 2.5, None], "b": (True,)})`,
			`{"debug":true,"extra":{"a":[1,2.5,null],"b":[true]},"name":"prod"}`},
		{`plain.py:factories.make( 'hi:' , 'y', 3, times=2 )`, `{"greeting": "hi:hi:", "rest": ["y", 3]}`},
	}
	for _, tc := range cases {
		t.Run(tc.spec, func(t *testing.T) {
			p := startPortico(t, "--python", python, "--chdir", dir, "--workers", "1", "--env", "PYTHONDONTWRITEBYTECODE=1", tc.spec)
			resp, body := get(t, newClient(t), p.URL("/"))
			wantStatus(t, resp, body, http.StatusOK)
			var got, want any
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("GET /: %v: %s", err, body)
			}
			json.Unmarshal([]byte(tc.want), &want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("GET / = %s, want %s", body, tc.want)
			}
		})
	}

	// Arguments that are not literals are refused before anything of the
	// app runs, with an error naming the argument.
	for spec, want := range map[string]string{
		`plain.py:factories.make('hi', 'x' if True else 'y')`: `factory argument 'x' if True else 'y' is not a literal`,
		`flaskfactory:create_app(__name__)`:                   `factory argument __name__ is not a literal`,
		`flaskfactory:create_app(**opts)`:                     `**kwargs is not allowed`,
	} {
		out, code := runImportFailure(t, python, dir, spec)
		if code != 1 || !strings.Contains(out, want) || !strings.Contains(out, "ValueError") {
			t.Errorf("portico run %s: exit %d, want 1 and %q in the output:\n%s", spec, code, want, out)
		}
	}
}

// runImportFailure runs `portico run` with an app that must fail to load
// and returns its output and exit code.
func runImportFailure(t *testing.T, python, dir, spec string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, porticoBin, "run", "--bind", "127.0.0.1:0", "--python", python, "--chdir", dir,
		"--workers", "1", "--env", "PYTHONDONTWRITEBYTECODE=1", spec)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("portico run %s still running after %v; output:\n%s", spec, readyTimeout, out.String())
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		t.Fatalf("portico run %s: %v, want a non-zero exit; output:\n%s", spec, err, out.String())
	}
	return out.String(), exitErr.ExitCode()
}
