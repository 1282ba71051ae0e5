#!/usr/bin/env bash
# test.sh: the one command that checks the whole repository.
#
#   1. installs the Debian packages the interop and end-to-end tests use
#      (Django, Flask, nginx, uWSGI, gunicorn, wrk, php-fpm, Tomcat 10, and
#      iproute2 for the network-namespace test, Chromium for the status
#      page's browser test, slowhttptest for the slow-client run), if any
#      is missing;
#   2. gofmt (fails listing the unformatted files), go vet, staticcheck;
#   3. h2spec against a Portico TLS listener and net/http (the counts);
#   4. go test -race on every package, with PORTICO_REQUIRE_INTEROP=1 so a
#      test that needs one of those programs fails instead of skipping;
#   5. the slow-client run (bench/slowclients.sh, about 45 s): slowloris and
#      slow-POST connections held against `portico run` while plain GETs
#      must all be answered; it prints its figures.
#
# Run it from anywhere: ./test.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="$PATH:/usr/local/go/bin"
fi

# staticcheck 2026.2.2. The module proxy knows it by its semver name; the
# year-style names (2025.1.1, ...) do not resolve through it, and releases
# before 2026.1 do not support Go 1.26.
STATICCHECK_VERSION=v0.8.2

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
packages=(python3-django python3-flask nginx uwsgi uwsgi-plugin-python3 gunicorn wrk php-fpm tomcat10 iproute2 chromium redis-server slowhttptest)
missing=()
for pkg in "${packages[@]}"; do
	if command -v dpkg-query >/dev/null 2>&1; then
		status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
		[[ $status == "install ok installed" ]] || missing+=("$pkg")
	else
		# No dpkg: judge by the executables the tests run.
		case $pkg in
		nginx | uwsgi | gunicorn | wrk | chromium | slowhttptest) command -v "$pkg" >/dev/null 2>&1 || missing+=("$pkg") ;;
		# The binary's name carries the PHP version: /usr/sbin/php-fpm8.2.
		php-fpm) compgen -G '/usr/sbin/php-fpm*' >/dev/null || missing+=("$pkg") ;;
		tomcat10) [[ -x /usr/share/tomcat10/bin/catalina.sh ]] || missing+=("$pkg") ;;
		iproute2) command -v ip >/dev/null 2>&1 || missing+=("$pkg") ;;
		redis-server) command -v redis-server >/dev/null 2>&1 || missing+=("$pkg") ;;
		esac
	fi
done
if ((${#missing[@]} > 0)); then
	echo "installing: ${missing[*]}"
	if ! command -v apt-get >/dev/null 2>&1; then
		echo "test.sh: apt-get not found; install these by hand: ${missing[*]}" >&2
		exit 1
	fi
	sudo=()
	if [[ $(id -u) -ne 0 ]]; then
		sudo=(sudo)
	fi
	"${sudo[@]}" apt-get update
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
	# On a systemd host the tomcat10 package starts its service on port
	# 8080. The tests run their own Tomcat (catalina.sh run, a private
	# CATALINA_BASE, a free port), so stop the one installed here.
	if [[ " ${missing[*]} " == *" tomcat10 "* && -d /run/systemd/system ]]; then
		"${sudo[@]}" systemctl disable --now tomcat10 || true
	fi
else
	echo "all present: ${packages[*]}"
fi

step "gofmt"
unformatted=$(find . -name '*.go' -not -path './.git/*' -not -path '*/testdata/*' -print0 | xargs -0 -r gofmt -l)
if [[ -n $unformatted ]]; then
	echo "test.sh: these files need gofmt -w:" >&2
	echo "$unformatted" >&2
	exit 1
fi
echo ok

step "go vet"
go vet ./...
echo ok

step "staticcheck $STATICCHECK_VERSION"
go run "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION" ./...
echo ok

# h2spec (github.com/summerwind/h2spec), built into a temporary GOBIN: not a
# dependency of the module, so not in go.mod. TestH2Spec runs it against a
# Portico TLS listener and against net/http; here it prints the counts.
H2SPEC_VERSION=v2.2.1+incompatible
step "h2spec $H2SPEC_VERSION"
h2spec_bin=$(mktemp -d)
trap 'rm -rf "$h2spec_bin"' EXIT
GOBIN=$h2spec_bin go install "github.com/summerwind/h2spec/cmd/h2spec@$H2SPEC_VERSION"
export H2SPEC=$h2spec_bin/h2spec
PORTICO_REQUIRE_INTEROP=1 go test -count=1 -run '^TestH2Spec$' -v ./internal/server | grep -E 'h2spec against|failed http2/|^(--- |ok|FAIL)'

step "go test -race"
PORTICO_REQUIRE_INTEROP=1 go test -race -count=1 -timeout 20m ./...

step "slow clients (bench/slowclients.sh)"
./bench/slowclients.sh
