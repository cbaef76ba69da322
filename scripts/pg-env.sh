#!/usr/bin/env bash
# Provides a local, throwaway PostgreSQL server for the tests. Idempotent, takes no input:
#
#   URL=$(scripts/pg-env.sh)      # install if needed, initdb, start, create mcpgate_test
#   psql "$URL" -c 'select 1'
#   scripts/pg-env.sh stop        # stop the server (no error if it is not running)
#
# stdout carries exactly one line, postgres://mcpgate@127.0.0.1:$PGENV_PORT/mcpgate_test;
# every other message goes to stderr. Silent when the server is already up.
#
# - Server binaries: the highest /usr/lib/postgresql/*/bin (Debian layout; once a cluster
#   exists, the bin dir of its major version), else initdb/pg_ctl/postgres found on PATH, else
#   `apt-get install -y postgresql` (`apt-get update` only if that fails; sudo when not root).
# - The cluster lives in $PGENV_DIR (default <repo>/.pgdata, git-ignored): superuser mcpgate,
#   trust auth, listening on 127.0.0.1:$PGENV_PORT only (default: the port the running cluster
#   has, else the first free one from 55432 up), unix socket in the
#   data dir (in /tmp if that path is too long for a socket), log in <data dir>/server.log.
#   Settings live in <data dir>/pg-env.conf, rewritten (and the server restarted) when they
#   change, e.g. for another PGENV_PORT.
# - PostgreSQL refuses to run as root. As root the server runs as the owner of an existing
#   cluster, else as `postgres`, else as a system user `mcpgate-pg` (created). If that user
#   cannot reach the default data dir (repo under /root or another private dir), the cluster
#   goes to /tmp/mcpgate-pg-<hash of the default path> instead, and a note on stderr says so;
#   an explicit PGENV_DIR that user cannot reach is an error.
# - Concurrent runs are serialised with flock on this file. Test data only.
set -euo pipefail

script="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
repo_root="$(dirname "$(dirname "$script")")"
port="${PGENV_PORT:-55432}"
superuser=mcpgate
db=mcpgate_test
mode="${1:-start}"

# stdout is reserved for the URL: keep it on fd 3 and send everything else to stderr.
exec 3>&1 1>&2

log() { echo "pg-env: $*"; }
die() { log "error: $*"; exit 1; }

case "$mode" in
    start | stop) ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$script"; exit 0 ;;
    *) die "unknown argument '$mode'; usage: $0 [stop]" ;;
esac
[[ "$port" =~ ^[1-9][0-9]{0,4}$ ]] && ((port <= 65535)) ||
    die "PGENV_PORT must be a TCP port number, got '$port'"

if command -v flock >/dev/null 2>&1; then
    exec 9<"$script"
    flock -w 120 9 || die "another scripts/pg-env.sh run has held the lock for 120 s"
fi

# run_as USER CMD...: run CMD as USER (empty: the current user), from / so that a private
# working directory (/root) does not bother PostgreSQL's tools, and with every fd but 0-2
# closed: the server started by pg_ctl (or by apt-get's postinst) must not keep fd 3, the lock
# or a pipe inherited from the caller open, or `URL=$(scripts/pg-env.sh)` and CI steps would
# wait for it to exit.
run_as() {
    local user="$1"
    shift
    (
        if [[ -d /proc/$BASHPID/fd ]]; then
            for f in /proc/$BASHPID/fd/*; do
                fd="${f##*/}"
                ((fd > 2 && fd != 255)) && eval "exec $fd>&-"
            done
        else
            exec 3>&- 9<&-
        fi
        cd /
        if [[ -z "$user" ]]; then
            exec "$@"
        elif command -v runuser >/dev/null 2>&1; then
            exec runuser -u "$user" -- "$@"
        else
            exec su -s /bin/bash "$user" -c "$(printf '%q ' "$@")"
        fi
    )
}
pg_user="" # who runs initdb/pg_ctl; empty: the current (non-root) user
run_pg() { run_as "$pg_user" "$@"; }

# --- server binaries ---------------------------------------------------------------------
pg_usable() {
    local t
    for t in initdb pg_ctl postgres; do
        [[ -x "$1/$t" ]] && "$1/$t" --version >/dev/null 2>&1 || return 1
    done
}
pg_major() { "$1/postgres" --version | awk '{print $3}' | cut -d. -f1; }
# find_bindir [MAJOR]: print the bin dir to use (of that major version, if given).
find_bindir() {
    local want="${1:-}" d p candidates=()
    while IFS= read -r d; do
        [[ -n "$d" ]] && candidates+=("$d")
    done < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -V -r)
    if p="$(command -v pg_ctl 2>/dev/null)"; then
        candidates+=("$(dirname "$(readlink -f "$p" 2>/dev/null || echo "$p")")")
    fi
    for d in ${candidates[@]+"${candidates[@]}"}; do
        pg_usable "$d" || continue
        [[ -z "$want" || "$(pg_major "$d")" == "$want" ]] || continue
        echo "$d"
        return 0
    done
    return 1
}
install_pg() {
    command -v apt-get >/dev/null 2>&1 ||
        die "no PostgreSQL server (initdb, pg_ctl, postgres) found and no apt-get to install one; install PostgreSQL and put its bin dir on PATH"
    local sudo=""
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "PostgreSQL is missing and installing it needs root (no sudo found)"
        sudo=sudo
    fi
    log "installing PostgreSQL: apt-get install -y postgresql"
    if ! run_as "" $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; then
        log "install failed; running apt-get update and retrying"
        run_as "" $sudo apt-get update -qq
        run_as "" $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
    fi
}
if [[ "$mode" == start ]] && ! find_bindir >/dev/null; then
    install_pg
    find_bindir >/dev/null || die "PostgreSQL installed but initdb/pg_ctl/postgres are still not usable"
fi

# --- who runs the server, and where the cluster lives --------------------------------------
abspath() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
requested="$(abspath "${PGENV_DIR:-$repo_root/.pgdata}")"
[[ "$requested" == / ]] || requested="${requested%/}"
dir="$requested"

# The non-root owner of an existing cluster in $1, if any.
cluster_owner() {
    local o
    if [[ -f "$1/PG_VERSION" ]]; then
        o="$(stat -c %U "$1")"
        [[ "$o" == root ]] || echo "$o"
    fi
    return 0
}
# Whether user $1 can search every directory on the way to $2 (the rest is created 0755).
can_reach() {
    local a
    a="$(dirname "$2")"
    while [[ ! -e "$a" ]]; do a="$(dirname "$a")"; done
    run_as "$1" test -d "$a" -a -x "$a"
}

if [[ $(id -u) -eq 0 ]]; then
    pg_user="$(cluster_owner "$dir")"
    if [[ -z "$pg_user" ]]; then
        if id -u postgres >/dev/null 2>&1; then
            pg_user=postgres
        elif id -u mcpgate-pg >/dev/null 2>&1; then
            pg_user=mcpgate-pg
        elif [[ "$mode" == stop ]]; then
            log "no PostgreSQL user and no cluster in $dir; nothing to stop"
            exit 0
        else
            log "creating system user mcpgate-pg to run PostgreSQL (it refuses to run as root)"
            useradd --system --user-group --no-create-home --home-dir /nonexistent \
                --shell /usr/sbin/nologin mcpgate-pg
            pg_user=mcpgate-pg
        fi
    fi
    if ! can_reach "$pg_user" "$dir"; then
        [[ -z "${PGENV_DIR:-}" ]] ||
            die "user $pg_user cannot reach PGENV_DIR=$dir (a parent directory is not searchable); choose another directory"
        if command -v sha256sum >/dev/null 2>&1; then
            hash="$(printf '%s' "$requested" | sha256sum | cut -c1-12)"
        else
            hash="$(printf '%s' "$requested" | cksum | cut -d' ' -f1)"
        fi
        dir="/tmp/mcpgate-pg-$hash"
        log "note: user $pg_user cannot reach $requested (a parent directory is private); the cluster lives in $dir instead"
        [[ ! -L "$dir" ]] || die "$dir is a symlink; refusing to use it"
        if [[ -e "$dir" ]]; then
            o="$(stat -c %U "$dir")"
            [[ "$o" == root || "$o" == "$pg_user" || -n "$(cluster_owner "$dir")" ]] ||
                die "$dir belongs to $o; remove it"
        fi
        o="$(cluster_owner "$dir")"
        [[ -z "$o" ]] || pg_user="$o"
    fi
elif [[ -e "$dir" && ! -O "$dir" ]]; then
    die "$dir belongs to $(stat -c %U "$dir" 2>/dev/null || echo another user); run as that user (or root), or remove it"
fi
log_file="$dir/server.log"

tail_log_and_die() {
    log "error: $1"
    if [[ -f "$log_file" ]]; then
        log "last lines of $log_file:"
        tail -n 25 "$log_file" | sed 's/^/    /'
    fi
    exit 1
}

# --- stop ------------------------------------------------------------------------------------
if [[ "$mode" == stop ]]; then
    if [[ ! -f "$dir/postmaster.pid" ]]; then
        log "not running ($dir)"
        exit 0
    fi
    bindir="$(find_bindir "$(cat "$dir/PG_VERSION")")" ||
        die "a server seems to run in $dir but no PostgreSQL $(cat "$dir/PG_VERSION") binaries are found to stop it"
    if ! run_pg "$bindir/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
        log "not running ($dir)"
        exit 0
    fi
    log "stopping the server in $dir"
    run_pg "$bindir/pg_ctl" -D "$dir" -m fast -w -t 60 stop >/dev/null ||
        tail_log_and_die "pg_ctl stop failed"
    exit 0
fi

# --- init --------------------------------------------------------------------------------------
if [[ ! -f "$dir/PG_VERSION" ]]; then
    if [[ -d "$dir" && -n "$(ls -A "$dir")" ]]; then
        die "$dir is not empty but holds no cluster (no PG_VERSION); remove it"
    fi
    (umask 022 && mkdir -p "$dir")
    [[ -z "$pg_user" ]] || chown "$pg_user": "$dir"
    chmod 700 "$dir"
    bindir="$(find_bindir)"
    log "creating a PostgreSQL $(pg_major "$bindir") cluster in $dir"
    if ! out="$(run_pg "$bindir/initdb" -D "$dir" -U "$superuser" --auth-local=trust --auth-host=trust \
        --encoding=UTF8 --locale=C 2>&1)"; then
        printf '%s\n' "$out"
        die "initdb failed"
    fi
    run_pg tee "$dir/pg_hba.conf" >/dev/null <<'EOF'
# Written by scripts/pg-env.sh: a test cluster, trust auth, loopback only.
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   127.0.0.1/32  trust
EOF
    printf '\n# Added by scripts/pg-env.sh, which rewrites that file on each run.\ninclude_if_exists = %s\n' \
        "'pg-env.conf'" | run_pg tee -a "$dir/postgresql.conf" >/dev/null
fi
version="$(cat "$dir/PG_VERSION")"
bindir="$(find_bindir "$version")" ||
    die "the cluster in $dir is PostgreSQL $version, whose binaries are not installed; remove $dir to recreate it"
tool() { if [[ -x "$bindir/$1" ]]; then echo "$bindir/$1"; else command -v "$1" || die "$1 not found"; fi; }
pg_ctl="$bindir/pg_ctl"
pg_isready="$(tool pg_isready)"
psql="$(tool psql)"

# --- port ----------------------------------------------------------------------------------------
# Without PGENV_PORT, a running cluster keeps the port it has; a stopped one takes the first
# free port from 55432 up, so another checkout's test server on the same machine is no obstacle.
running=0
run_pg "$pg_ctl" -D "$dir" status >/dev/null 2>&1 && running=1
port_taken() { (exec 8<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [[ -z "${PGENV_PORT:-}" ]]; then
    current="$(sed -n 's/^port = \([0-9]*\)$/\1/p' "$dir/pg-env.conf" 2>/dev/null || true)"
    if ((running)) && [[ -n "$current" ]]; then
        port="$current"
    else
        while port_taken "$port"; do
            ((port < 55532)) || die "no free port in 55432-55532 on 127.0.0.1; set PGENV_PORT"
            port=$((port + 1))
        done
    fi
fi

# --- settings ------------------------------------------------------------------------------------
socket_dir="$dir"
((${#socket_dir} + 20 <= 107)) || socket_dir=/tmp # sun_path holds 107 bytes
sql_str() { printf "'%s'" "${1//\'/\'\'}"; }
conf="# Written by scripts/pg-env.sh on every run: edit the script or set PGENV_PORT instead.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = $(sql_str "$socket_dir")"
conf_changed=0
if [[ "$(cat "$dir/pg-env.conf" 2>/dev/null || true)" != "$conf" ]]; then
    printf '%s\n' "$conf" | run_pg tee "$dir/pg-env.conf" >/dev/null
    conf_changed=1
fi

# --- start -------------------------------------------------------------------------------------
deadline=$((SECONDS + 30))
if ((running && conf_changed)); then
    log "settings changed; restarting the server in $dir"
    run_pg "$pg_ctl" -D "$dir" -m fast -w -t 30 stop >/dev/null || tail_log_and_die "pg_ctl stop failed"
    running=0
    deadline=$((SECONDS + 30))
fi
if ((!running)); then
    rc=0
    "$pg_isready" -q -h 127.0.0.1 -p "$port" -t 2 || rc=$?
    ((rc != 0 && rc != 1)) ||
        die "another server already answers on 127.0.0.1:$port; stop it or set PGENV_PORT to a free port"
    log "starting PostgreSQL $version on 127.0.0.1:$port (data $dir, log $log_file)"
    run_pg "$pg_ctl" -D "$dir" -l "$log_file" -w -t 30 start >/dev/null ||
        tail_log_and_die "the server did not start"
fi
until "$pg_isready" -q -h 127.0.0.1 -p "$port" -U "$superuser" -t 1; do
    ((SECONDS < deadline)) ||
        tail_log_and_die "the server does not accept connections on 127.0.0.1:$port after 30 s"
    sleep 0.2
done

# --- database ----------------------------------------------------------------------------------
psql_q() { "$psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U "$superuser" -d postgres "$@"; }
has_db() { [[ "$(psql_q -c "select 1 from pg_database where datname = '$db'")" == 1 ]]; }
if ! has_db; then
    log "creating database $db"
    psql_q -c "create database $db" || has_db || die "could not create database $db"
fi

printf 'postgres://%s@127.0.0.1:%s/%s\n' "$superuser" "$port" "$db" >&3
