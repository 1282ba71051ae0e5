package main

// serveUsage is the help text of `portico serve` (serve --help, help serve).
const serveUsage = `Usage: portico serve [-c FILE] [--python PATH]

Serve everything a TOML config file describes: listeners, sites, routes,
apps, upstreams. The README's "Configuration" section lists every key.

Flags:
  -c FILE          the config file (default portico.toml) [nginx -c, uwsgi --ini]
  --python PATH    interpreter for the workers of every app, overriding each
                   [app.NAME] python, at start and on every reload (default:
                   each app's python key, else $VIRTUAL_ENV/bin/python, else
                   python3) [uwsgi --home/--virtualenv]

Signals: SIGTERM/SIGINT stop gracefully (in-flight requests finish);
SIGHUP re-reads the file and restarts every app's workers, new ones ready
before the old ones retire, so new code is loaded with no failed request
(an app with reload_code = false keeps its workers when its settings did
not change). An invalid file, or new code that cannot be imported, is
logged and the running config and workers stay. The admin listener's
POST /reload does the same and answers 422 with the errors. SIGUSR1
reopens the log files (logrotate).
`

// checkUsage is the help text of `portico check` (check --help, help check).
const checkUsage = `Usage: portico check [-c FILE] [--python PATH]

Validate a config file, like nginx -t: print "FILE: OK" and exit 0, or
print every error, one a line as FILE:LINE: KEY: PROBLEM sorted by line,
and exit 1. Nothing is started: no socket is opened, no app imported.

Flags:
  -c FILE          the config file (default portico.toml) [nginx -t -c]
  --python PATH    check the config as serve --python PATH would serve it:
                   every app's interpreter replaced by PATH
`
