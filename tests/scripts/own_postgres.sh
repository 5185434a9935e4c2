#!/bin/bash
# A PRIVATE PostgreSQL instance for fault-injection tests (tests/postgres_pause.rs), so a
# test can pause its server without touching the shared one on 127.0.0.1:5432.
#
#   own_postgres.sh start DIR PORT    initdb into DIR (must not exist or be empty), start the
#                                     server on 127.0.0.1:PORT (socket in DIR), print the
#                                     postmaster's PID
#   own_postgres.sh signal DIR SIG    send SIG (STOP or CONT) to the postmaster of DIR and
#                                     every child of it; print the PIDs signalled. STOP
#                                     waits (at most 2 s) until every one is stopped.
#   own_postgres.sh stop DIR          resume (SIGCONT) and stop the instance at once
#                                     (`pg_ctl -m immediate`, SIGKILL if that fails), then
#                                     remove DIR
#
# Runs initdb and the server as the `postgres` OS user when started as root (`runuser`).
# Exit status: 0 ok, 2 usage, 3 PostgreSQL binaries not found, 1 any other failure.
# Only loopback; never touches an instance whose data directory is not DIR.
set -u

die() {
    echo "own_postgres.sh: $*" >&2
    exit "${code:-1}"
}

usage() {
    code=2 die "usage: $0 start DIR PORT | signal DIR STOP|CONT | stop DIR"
}

# The directory holding initdb and pg_ctl: the newest /usr/lib/postgresql/*/bin, else PATH.
find_bin() {
    local d best=""
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
            best=$d
        fi
    done
    if [ -z "$best" ] && command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        best=$(dirname "$(command -v pg_ctl)")
    fi
    [ -n "$best" ] || code=3 die "initdb/pg_ctl not found (looked in /usr/lib/postgresql/*/bin and PATH)"
    echo "$best"
}

# Runs a command as the postgres OS user when we are root, else as ourselves.
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        command -v runuser >/dev/null 2>&1 || die "running as root but runuser is missing"
        id postgres >/dev/null 2>&1 || die "running as root but there is no postgres OS user"
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

check_dir() {
    case "$1" in
        /*) ;;
        *) code=2 die "DIR must be an absolute path: $1" ;;
    esac
    [ "$1" != / ] || code=2 die "refusing DIR=/"
}

postmaster_pid() {
    [ -f "$1/postmaster.pid" ] || return 1
    local pid
    pid=$(head -n 1 "$1/postmaster.pid")
    case "$pid" in
        '' | *[!0-9]*) return 1 ;;
    esac
    echo "$pid"
}

# Whether PID runs (a zombie does not count).
alive() {
    case "$(ps -o stat= -p "$1" 2>/dev/null)" in
        '' | Z*) return 1 ;;
        *) return 0 ;;
    esac
}

# The postmaster of DIR and its children, postmaster first.
instance_pids() {
    local pm
    pm=$(postmaster_pid "$1") || return 1
    kill -0 "$pm" 2>/dev/null || return 1
    echo "$pm"
    ps -o pid= --ppid "$pm" | tr -d ' '
}

cmd_start() {
    local dir=$1 port=$2 bin pid
    check_dir "$dir"
    case "$port" in
        '' | *[!0-9]*) code=2 die "PORT must be a number: $port" ;;
    esac
    [ "$port" != 5432 ] || code=2 die "refusing port 5432 (the shared instance's)"
    bin=$(find_bin) || exit $?
    if [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
        die "$dir exists and is not empty"
    fi
    mkdir -p "$dir" || die "cannot create $dir"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$dir" || die "cannot chown $dir to postgres"
    fi
    chmod 700 "$dir" || die "cannot chmod $dir"
    if ! as_pg "$bin/initdb" -D "$dir" --auth=trust -U postgres -E UTF8 --no-sync \
        >"$dir.initdb.log" 2>&1; then
        cat "$dir.initdb.log" >&2
        rm -f "$dir.initdb.log"
        die "initdb into $dir failed"
    fi
    rm -f "$dir.initdb.log"
    # fsync off: the test never crashes the machine, and the box is small.
    if ! as_pg "$bin/pg_ctl" -D "$dir" \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" \
        -w -t 30 start -l "$dir/log" >/dev/null; then
        tail -n 20 "$dir/log" >&2 2>/dev/null
        die "pg_ctl start of $dir on port $port failed"
    fi
    pid=$(postmaster_pid "$dir") || die "no postmaster.pid in $dir after start"
    echo "$pid"
}

cmd_signal() {
    local dir=$1 sig=$2 pids p i stopped
    check_dir "$dir"
    case "$sig" in
        STOP | CONT) ;;
        *) code=2 die "SIG must be STOP or CONT: $sig" ;;
    esac
    pids=$(instance_pids "$dir") || die "no running instance in $dir"
    # The postmaster first: once it is stopped it forks no new children.
    for p in $pids; do
        kill "-$sig" "$p" 2>/dev/null || echo "own_postgres.sh: pid $p gone before SIG$sig" >&2
    done
    if [ "$sig" = STOP ]; then
        # A child forked between listing and stopping the postmaster: catch it too.
        for p in $(ps -o pid= --ppid "$(postmaster_pid "$dir")" | tr -d ' '); do
            case " $(echo $pids) " in
                *" $p "*) ;;
                *) kill -STOP "$p" 2>/dev/null && pids="$pids $p" ;;
            esac
        done
        for i in $(seq 1 40); do
            stopped=1
            for p in $pids; do
                case "$(ps -o stat= -p "$p" 2>/dev/null)" in
                    T*) ;;
                    '') ;; # exited
                    *) stopped=0 ;;
                esac
            done
            [ "$stopped" = 1 ] && break
            sleep 0.05
        done
        [ "$stopped" = 1 ] || die "not every process of $dir stopped within 2 s"
    fi
    echo $pids
}

cmd_stop() {
    local dir=$1 bin pm p port
    check_dir "$dir"
    if [ -e "$dir" ] && [ ! -f "$dir/PG_VERSION" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
        die "$dir is not a PostgreSQL data directory; not touching it"
    fi
    if pm=$(postmaster_pid "$dir"); then
        port=$(sed -n 4p "$dir/postmaster.pid")
        [ "$port" != 5432 ] || die "$dir runs on port 5432 (the shared instance?); not stopping it"
        # A stopped process handles no signal: resume everything first.
        for p in $(instance_pids "$dir" 2>/dev/null); do
            kill -CONT "$p" 2>/dev/null
        done
        bin=$(find_bin) || bin=""
        if [ -z "$bin" ] || ! as_pg "$bin/pg_ctl" -D "$dir" -m immediate -w -t 10 stop >/dev/null 2>&1; then
            echo "own_postgres.sh: pg_ctl stop of $dir failed; killing pid $pm and its children" >&2
            for p in $(ps -o pid= --ppid "$pm" | tr -d ' ') "$pm"; do
                kill -KILL "$p" 2>/dev/null
            done
        fi
        # pg_ctl returns when the pid file is gone; the process may take a moment more.
        for _ in $(seq 1 100); do
            alive "$pm" || break
            sleep 0.05
        done
        if alive "$pm"; then
            die "postmaster $pm of $dir still running 5 s after stop"
        fi
    fi
    rm -rf "$dir" || die "cannot remove $dir"
}

[ $# -ge 2 ] || usage
case "$1" in
    start) [ $# -eq 3 ] || usage; cmd_start "$2" "$3" ;;
    signal) [ $# -eq 3 ] || usage; cmd_signal "$2" "$3" ;;
    stop) [ $# -eq 2 ] || usage; cmd_stop "$2" ;;
    *) usage ;;
esac
