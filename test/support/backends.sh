#!/usr/bin/env bash
# Start the real backends the tests need, run a command with their URLs in the
# environment, then stop them and remove their files.
#
#   bash test/support/backends.sh <command...>      (npm test runs `... tap`)
#
# When the command is tap, it first makes sure tap's plugin build is current
# (see tap_warm_up).
#
# Each backend is one `backend_<name>` function, listed in BACKENDS below. It
#   - does nothing if its environment variable is already set (a developer can
#     point the tests at a server of their own),
#   - installs what it needs if missing (apt_install: `apt-get update` once),
#   - starts a private instance on a free 127.0.0.1 port, waits (bounded) until
#     it answers, registers its cleanup with on_exit and exports its URL,
#   - on failure calls `die "one clear line"` (the tests never run without it).
#
# Exported now:
#   TEST_DATABASE_URL  postgres://postgres:PASS@127.0.0.1:PORT/postgres (admin;
#                      tests create their own databases from it)
#   TEST_PUBSUB_EMULATOR_HOST  127.0.0.1:PORT of a private Pub/Sub emulator
#                      (project-agnostic; tests create their own topics). Not
#                      PUBSUB_EMULATOR_HOST: tests choose per process where the
#                      service connects (directly, or through a fault proxy).
#   TEST_S3_ENDPOINT  http://127.0.0.1:PORT of a private S3 emulator (moto;
#                      tests create their own buckets), with AWS_ACCESS_KEY_ID,
#                      AWS_SECRET_ACCESS_KEY (both "test") and AWS_REGION
#   TEST_NGINX, TEST_PYTHON  nginx, and the Debian python3 that has grpcio (with
#                      protoc and grpc_python_plugin on PATH): third-party
#                      clients and a gateway, started by the tests themselves
#                      (test/support/third-party.ts)
# To add later (one function each, then list it in BACKENDS):
set -euo pipefail

# TEST_BACKENDS="postgres s3" in the environment starts only those (npm run bench
# starts its own Pub/Sub emulator, so it asks for the other two).
read -r -a BACKENDS <<<"${TEST_BACKENDS:-postgres pubsub s3 gateway}"
START_TIMEOUT=${BACKENDS_START_TIMEOUT:-30} # seconds each backend may take to answer

me="backends.sh"
die() { echo "$me: error: $*" >&2; exit 1; }
note() { echo "$me: $*" >&2; }

[ $# -gt 0 ] || die "usage: bash test/support/backends.sh <command...>"

# ---------------------------------------------------------------- cleanup ---
# Cleanups run in reverse order of registration, on any exit (normal, error,
# Ctrl-C, SIGTERM). Each one is best-effort and never changes the exit code.
CLEANUPS=()
on_exit() { CLEANUPS+=("$1"); }
run_cleanups() {
  local rc=$? i
  trap - EXIT INT TERM HUP
  set +e
  for ((i = ${#CLEANUPS[@]} - 1; i >= 0; i--)); do eval "${CLEANUPS[i]}"; done
  exit "$rc"
}
trap run_cleanups EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vms-backends.XXXXXX") || die "cannot create a temporary directory"
chmod 755 "$WORK"
on_exit 'rm -rf "$WORK"'

# ---------------------------------------------------------------- helpers ---
APT_UPDATED=0
apt_install() { # apt_install <debian package...>
  [ "$(id -u)" -eq 0 ] || die "need to install $* but not root: install it (apt-get install -y $*) and retry"
  command -v apt-get >/dev/null 2>&1 || die "need to install $* but apt-get is not available"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$APT_UPDATED" -eq 0 ]; then
    note "apt-get update"
    apt-get -o DPkg::Lock::Timeout=300 update -qq >"$WORK/apt.log" 2>&1 || die "apt-get update failed: $(tail -n 1 "$WORK/apt.log")"
    APT_UPDATED=1
  fi
  note "apt-get install -y $*"
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq "$@" >>"$WORK/apt.log" 2>&1 \
    || die "apt-get install $* failed: $(tail -n 1 "$WORK/apt.log")"
}

group_stop() { # group_stop <pid of a process group leader>: TERM, up to 5 s, then KILL
  kill -TERM -- "-$1" 2>/dev/null || return 0
  local i
  for i in $(seq 1 50); do
    kill -0 -- "-$1" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL -- "-$1" 2>/dev/null
  return 0
}

free_port() { # prints a TCP port that is free on 127.0.0.1 right now
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

wait_until() { # wait_until <seconds> <command...>: true once the command succeeds
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# ------------------------------------------------------------- PostgreSQL ---
pg_bindir() { # newest installed major version's bin dir, or nothing
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/pg_isready" ] && echo "$d"
  return 0
}

backend_postgres() {
  if [ -n "${TEST_DATABASE_URL:-}" ]; then
    note "PostgreSQL: using TEST_DATABASE_URL from the environment"
    return 0
  fi
  local bin
  bin=$(pg_bindir)
  if [ -z "$bin" ]; then
    apt_install postgresql
    bin=$(pg_bindir)
    [ -n "$bin" ] || die "PostgreSQL was installed but no /usr/lib/postgresql/*/bin/initdb was found"
  fi
  local ver=${bin%/bin}; ver=${ver##*/}

  # PostgreSQL refuses to run as root: run it as the postgres user then.
  local as=()
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "PostgreSQL is installed but there is no postgres user"
    as=(runuser -u postgres --)
  fi
  local dir="$WORK/postgres"
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$dir"
    # $TMPDIR may be somewhere the postgres user cannot enter: fall back to /tmp.
    if ! runuser -u postgres -- test -w "$dir"; then
      dir=$(mktemp -d /tmp/vms-postgres.XXXXXX) || die "cannot create a temporary directory in /tmp"
      on_exit "rm -rf '$dir'"
      chown postgres: "$dir"
    fi
  fi
  local log="$dir/server.log" pass
  pass=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  printf '%s\n' "$pass" >"$dir/pwfile"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$dir/pwfile"
  chmod 600 "$dir/pwfile"

  # cd: the postgres user may not be allowed into the caller's directory.
  (cd "$dir" && "${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres --pwfile="$dir/pwfile" \
      --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync) \
    >"$dir/initdb.log" 2>&1 \
    || die "PostgreSQL $ver initdb failed: $(tail -n 1 "$dir/initdb.log")"
  rm -f "$dir/pwfile"
  on_exit "pg_stop '$bin' '$dir'"

  # The port is free when chosen but may be taken before the server binds it:
  # try a few ports.
  local port try started=0
  for try in 1 2 3; do
    port=$(free_port) || die "cannot find a free port (node missing?)"
    if (cd "$dir" && "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$log" -w -t "$START_TIMEOUT" \
          -o "-c listen_addresses=127.0.0.1 -p $port -k \"\" -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
          start) >/dev/null 2>&1; then
      started=1; break
    fi
    grep -q 'could not bind\|Address already in use' "$log" 2>/dev/null || break
  done
  [ "$started" -eq 1 ] || die "PostgreSQL $ver did not start on 127.0.0.1:${port}: $(tail -n 1 "$log" 2>/dev/null)"
  wait_until "$START_TIMEOUT" "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -d postgres \
    || die "PostgreSQL $ver on 127.0.0.1:$port did not accept connections within ${START_TIMEOUT}s"

  export TEST_DATABASE_URL="postgres://postgres:$pass@127.0.0.1:$port/postgres"
  note "PostgreSQL $ver: private cluster on 127.0.0.1:$port"
}

pg_stop() { # pg_stop <bindir> <dir>
  local bin=$1 dir=$2 as=() pid
  [ -f "$dir/data/postmaster.pid" ] || return 0
  [ "$(id -u)" -eq 0 ] && as=(runuser -u postgres --)
  (cd "$dir" && "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop) >/dev/null 2>&1 && return 0
  pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null) || return 0
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
  return 0
}

# ------------------------------------------------------ Pub/Sub emulator ---
# Google's emulator (Java), from the Debian package google-cloud-cli-pubsub-emulator.
# That package is in Google's Cloud SDK apt repository, not in Debian: where
# that repository is not configured or not reachable it cannot be installed
# here, and the run stops with that said (the event tests never skip).
pubsub_emulator_bin() { # the emulator's start script, or nothing
  local gcloud root
  gcloud=$(command -v gcloud 2>/dev/null) || return 0
  root=$(dirname "$(dirname "$(readlink -f "$gcloud")")")
  [ -x "$root/platform/pubsub-emulator/bin/cloud-pubsub-emulator" ] && echo "$root/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
  return 0
}

backend_pubsub() {
  if [ -n "${TEST_PUBSUB_EMULATOR_HOST:-}" ]; then
    note "Pub/Sub: using TEST_PUBSUB_EMULATOR_HOST from the environment"
    return 0
  fi
  local pkgs=()
  [ -n "$(pubsub_emulator_bin)" ] || pkgs+=(google-cloud-cli-pubsub-emulator)
  command -v java >/dev/null 2>&1 || pkgs+=(default-jre-headless)
  if [ ${#pkgs[@]} -gt 0 ]; then
    if [ -z "$(pubsub_emulator_bin)" ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
      if [ "$APT_UPDATED" -eq 0 ]; then
        note "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq >"$WORK/apt.log" 2>&1 \
          || die "apt-get update failed: $(tail -n 1 "$WORK/apt.log")"
        APT_UPDATED=1
      fi
      apt-cache policy google-cloud-cli-pubsub-emulator 2>/dev/null | grep -q 'Candidate: [0-9]' \
        || die "the Pub/Sub emulator is not installed and cannot be: Debian package google-cloud-cli-pubsub-emulator comes from Google's Cloud SDK apt repository, which is not configured or not reachable here; install it (and a Java runtime), or set TEST_PUBSUB_EMULATOR_HOST to a running emulator"
    fi
    apt_install "${pkgs[@]}"
    [ -n "$(pubsub_emulator_bin)" ] || die "google-cloud-cli-pubsub-emulator was installed but gcloud's pubsub-emulator was not found"
  fi

  local dir="$WORK/pubsub" log port try started=0
  mkdir -p "$dir/data"
  log="$dir/emulator.log"
  for try in 1 2 3; do
    port=$(free_port) || die "cannot find a free port (node missing?)"
    : >"$log"
    # Its own process group: gcloud runs the Java server as a child, and the
    # cleanup stops the whole group.
    CLOUDSDK_CORE_DISABLE_PROMPTS=1 CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK=1 \
      CLOUDSDK_CORE_DISABLE_USAGE_REPORTING=true CLOUDSDK_CONFIG="$dir/gcloud" \
      setsid gcloud beta emulators pubsub start --host-port="127.0.0.1:$port" \
        --project=vms-test --data-dir="$dir/data" </dev/null >"$log" 2>&1 &
    local pid=$!
    on_exit "group_stop $pid"
    local deadline=$((SECONDS + START_TIMEOUT))
    until grep -q 'Server started, listening on' "$log"; do
      kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ] || break
      sleep 0.2
    done
    if grep -q 'Server started, listening on' "$log"; then
      started=1; break
    fi
    group_stop "$pid"
    grep -qi 'address already in use\|failed to bind' "$log" || break
  done
  [ "$started" -eq 1 ] || die "the Pub/Sub emulator did not start on 127.0.0.1:$port within ${START_TIMEOUT}s: $(grep -v '^\s*$' "$log" | tail -n 1)"
  export TEST_PUBSUB_EMULATOR_HOST="127.0.0.1:$port"
  note "Pub/Sub emulator: private instance on 127.0.0.1:$port"
}

# ------------------------------------------------------------ S3 (moto) ---
# moto's S3 emulator (Python). It is not packaged for Debian: it comes from
# PyPI (pip install 'moto[server]'), which these machines cannot reach, so
# where it is missing the run stops with that said (the S3 tests never skip).
backend_s3() {
  if [ -n "${TEST_S3_ENDPOINT:-}" ]; then
    note "S3: using TEST_S3_ENDPOINT from the environment"
    export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}" AWS_REGION="${AWS_REGION:-us-east-1}"
    return 0
  fi
  command -v moto_server >/dev/null 2>&1 \
    || die "the S3 emulator is not installed: moto_server not found; install it with pip install 'moto[server]' (PyPI), or set TEST_S3_ENDPOINT to a running S3-compatible endpoint"

  local dir="$WORK/s3" log port try pid started=0
  mkdir -p "$dir"
  log="$dir/moto.log"
  for try in 1 2 3; do
    port=$(free_port) || die "cannot find a free port (node missing?)"
    : >"$log"
    # Its own process group: the pyenv shim runs Python as a child.
    setsid moto_server -H 127.0.0.1 -p "$port" </dev/null >"$log" 2>&1 &
    pid=$!
    on_exit "group_stop $pid"
    local deadline=$((SECONDS + START_TIMEOUT))
    until s3_answers "$port"; do
      kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ] || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null && s3_answers "$port"; then
      started=1; break
    fi
    group_stop "$pid"
    grep -qi 'address already in use' "$log" || break
  done
  # A pyenv shim whose Python has no moto says so on its first line.
  grep -q 'command not found' "$log" \
    && die "the S3 emulator is not installed for this Python: $(head -n 1 "$log"); install it with pip install 'moto[server]' (PyPI), or set TEST_S3_ENDPOINT"
  [ "$started" -eq 1 ] || die "the S3 emulator (moto) did not start on 127.0.0.1:$port within ${START_TIMEOUT}s: $(grep -v '^\s*$' "$log" | tail -n 1)"
  export TEST_S3_ENDPOINT="http://127.0.0.1:$port"
  # moto takes any credentials; the SDK needs some, and must not go looking.
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
  note "S3 emulator (moto): private instance on 127.0.0.1:$port"
}

s3_answers() { # s3_answers <port>: an S3 ListBuckets answer comes back
  node -e 'fetch(process.argv[1]).then(async (r) => process.exit(r.ok && /ListAllMyBucketsResult/.test(await r.text()) ? 0 : 1), () => process.exit(1))' \
    "http://127.0.0.1:$1/" >/dev/null 2>&1
}

# ------------------------------------------------------------ media tools ---
# Not a server: the media jobs run Debian's ffmpeg and ffprobe (FFMPEG_PATH /
# FFPROBE_PATH point elsewhere when set). Installed when missing, every run.
media_tools() {
  local ffmpeg=${FFMPEG_PATH:-ffmpeg} ffprobe=${FFPROBE_PATH:-ffprobe}
  if command -v "$ffmpeg" >/dev/null 2>&1 && command -v "$ffprobe" >/dev/null 2>&1; then return 0; fi
  apt_install ffmpeg
  command -v "$ffmpeg" >/dev/null 2>&1 && command -v "$ffprobe" >/dev/null 2>&1 || die "ffmpeg/ffprobe still not found after installing Debian's ffmpeg"
}

# ------------------------------------ third-party clients and a gateway ---
# nginx, Python's C-core gRPC (python3-grpcio) and protoc with its gRPC Python
# plugin, all from Debian. Debian's grpcio belongs to Debian's python3
# (/usr/bin/python3), which may not be the python3 on PATH (pyenv). Nothing is
# started here: each test runs its own nginx and clients.
backend_gateway() {
  if [ -n "${TEST_NGINX:-}" ] && [ -n "${TEST_PYTHON:-}" ]; then
    note "gateway: using TEST_NGINX and TEST_PYTHON from the environment"
    return 0
  fi
  local pkgs=()
  [ -x /usr/sbin/nginx ] || pkgs+=(nginx)
  /usr/bin/python3 -c 'import grpc, google.protobuf' >/dev/null 2>&1 || pkgs+=(python3-grpcio python3-protobuf)
  command -v protoc >/dev/null 2>&1 || pkgs+=(protobuf-compiler)
  [ -x /usr/bin/grpc_python_plugin ] || pkgs+=(protobuf-compiler-grpc)
  [ ${#pkgs[@]} -eq 0 ] || apt_install "${pkgs[@]}"
  [ -x /usr/sbin/nginx ] || die "nginx was installed but /usr/sbin/nginx is missing"
  /usr/bin/python3 -c 'import grpc, google.protobuf' >/dev/null 2>&1 \
    || die "python3-grpcio was installed but /usr/bin/python3 cannot import grpc"
  [ -x /usr/bin/grpc_python_plugin ] || die "protobuf-compiler-grpc was installed but /usr/bin/grpc_python_plugin is missing"
  export TEST_NGINX=/usr/sbin/nginx TEST_PYTHON=/usr/bin/python3
  note "gateway: $(/usr/sbin/nginx -v 2>&1 | tail -n 1), grpcio $(/usr/bin/python3 -c 'import grpc; print(grpc.__version__)')"
}

# ------------------------------------------------------------ tap warm-up ---
# tap 21 rebuilds its Test class when the plugin set configured in package.json
# (which disables @tapjs/typescript) differs from the one it was built with, as
# after every `npm ci`; but the test processes of that same run still get the
# old plugins' loaders and all fail. So when the command is tap, build first if
# the signatures differ (the check takes ~0.3 s; a build ~4 s). If the check
# itself breaks on some future tap, it just builds every time.
tap_warm_up() { # tap_warm_up <tap executable>
  node --input-type=module -e "
    await import('@tapjs/core');
    const { signature } = await import('@tapjs/test');
    const { TapConfig } = await import('@tapjs/config');
    process.exit((await TapConfig.load()).pluginSignature === signature ? 0 : 1);
  " >/dev/null 2>&1 && return 0
  note "tap: building its plugin set (first run after npm ci)"
  "$1" build >"$WORK/tap-build.log" 2>&1 || die "tap build failed: $(tail -n 1 "$WORK/tap-build.log")"
}

# -------------------------------------------------------------------- run ---
if [ "$(basename -- "$1")" = tap ]; then tap_warm_up "$1"; fi
for b in "${BACKENDS[@]}"; do
  declare -F "backend_$b" >/dev/null || die "unknown backend in TEST_BACKENDS: $b (known: postgres pubsub s3 gateway)"
done
media_tools
for b in "${BACKENDS[@]}"; do "backend_$b"; done

set +e
"$@"
rc=$?
set -e
exit "$rc"
