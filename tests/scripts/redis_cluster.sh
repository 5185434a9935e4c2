#!/bin/bash
# A PRIVATE Redis Cluster on loopback: 6 `redis-server` processes on ports BASE..BASE+5,
# 3 masters and 3 replicas (`redis-cli --cluster create --cluster-replicas 1`). Used by CI
# (`.ci/run`, base 7000) and by the failover test (tests/redis_cluster.rs, its own base), so
# killing a master never touches the shared Redis on 6379 or another test's cluster.
#
#   redis_cluster.sh start DIR BASE   start the 6 nodes (files under DIR, which must not
#                                     exist or be empty), create the cluster, wait until
#                                     every node reports `cluster_state:ok` and agrees on
#                                     3 masters with 16384 slots; print one line per node:
#                                     `PORT PID`
#   redis_cluster.sh kill DIR PORT    SIGKILL the node on PORT (a crash, for failover
#                                     tests); print its PID
#   redis_cluster.sh restart DIR PORT start the node on PORT again after a kill (it keeps
#                                     its cluster identity and rejoins, as a replica of the
#                                     master that took over); print its PID
#   redis_cluster.sh masters DIR      print the ports of the nodes that are masters now
#   redis_cluster.sh stop DIR         SIGKILL every node started in DIR (by the PIDs in
#                                     DIR/*.pid, checked to be redis-server), remove DIR
#
# Exit status: 0 ok, 2 usage, 3 redis-server or redis-cli not found, 1 any other failure.
# Nodes are in-memory (no RDB, no AOF) and bound to 127.0.0.1 only.
set -u

die() {
    echo "redis_cluster.sh: $*" >&2
    exit "${code:-1}"
}

usage() {
    code=2 die "usage: $0 start DIR BASE | kill DIR PORT | restart DIR PORT | masters DIR | stop DIR"
}

need_tools() {
    command -v redis-server >/dev/null 2>&1 || code=3 die "redis-server not found in PATH"
    command -v redis-cli >/dev/null 2>&1 || code=3 die "redis-cli not found in PATH"
}

check_dir() {
    case "$1" in
        /*) ;;
        *) code=2 die "DIR must be an absolute path: $1" ;;
    esac
    [ "$1" != / ] || code=2 die "refusing DIR=/"
}

check_port() {
    case "$1" in
        '' | *[!0-9]*) code=2 die "not a port: $1" ;;
    esac
    [ "$1" -ge 1024 ] && [ "$1" -le 65000 ] || code=2 die "port out of range: $1"
}

# The PID in DIR/PORT.pid if that process is alive and is a redis-server.
node_pid() {
    local dir=$1 port=$2 pid
    pid=$(cat "$dir/$port.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    case "$(cat "/proc/$pid/comm" 2>/dev/null)" in
        redis-server* | redis-check*) echo "$pid" ;;
        *) return 1 ;;
    esac
}

stop_all() {
    local dir=$1 f port pid
    for f in "$dir"/*.pid; do
        [ -e "$f" ] || continue
        port=$(basename "$f" .pid)
        if pid=$(node_pid "$dir" "$port"); then
            kill -KILL "$pid" 2>/dev/null
        fi
    done
    # Wait (at most 2 s) until they are gone, so the ports are free again.
    for _ in $(seq 1 20); do
        local alive=0
        for f in "$dir"/*.pid; do
            [ -e "$f" ] || continue
            node_pid "$dir" "$(basename "$f" .pid)" >/dev/null && alive=1
        done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
}

# Starts the node on PORT with its files under DIR/PORT.
start_node() {
    local dir=$1 port=$2
    mkdir -p "$dir/$port"
    # `cluster-node-timeout 1000`: a dead master is failed over within a few seconds.
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
        --dir "$dir/$port" --pidfile "$dir/$port.pid" --logfile "$dir/$port.log" \
        --cluster-enabled yes --cluster-config-file "nodes.conf" \
        --cluster-node-timeout 1000 --save "" --appendonly no \
        --cluster-require-full-coverage no
}

# Waits (at most 5 s) until the node on PORT answers and has written its PID file.
wait_node() {
    local dir=$1 port=$2
    for _ in $(seq 1 50); do
        if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && [ -s "$dir/$port.pid" ]; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

start() {
    local dir=$1 base=$2 port pid i
    check_port "$base"
    check_port $((base + 5))
    need_tools
    if [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
        code=2 die "DIR exists and is not empty: $dir"
    fi
    mkdir -p "$dir" || die "cannot create $dir"
    for i in 0 1 2 3 4 5; do
        port=$((base + i))
        if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
            stop_all "$dir"
            die "port $port is taken by a running server"
        fi
        start_node "$dir" "$port" || { stop_all "$dir"; die "redis-server on port $port did not start"; }
    done
    for i in 0 1 2 3 4 5; do
        port=$((base + i))
        wait_node "$dir" "$port" || { stop_all "$dir"; die "node $port did not answer within 5 s (see $dir/$port.log)"; }
    done
    local nodes=()
    for i in 0 1 2 3 4 5; do nodes+=("127.0.0.1:$((base + i))"); done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
        >"$dir/create.log" 2>&1 || { stop_all "$dir"; die "cluster create failed (see $dir/create.log)"; }
    # Every node sees the cluster as ok, with 3 masters covering 16384 slots.
    local ready=0
    for _ in $(seq 1 100); do
        ready=1
        for i in 0 1 2 3 4 5; do
            port=$((base + i))
            local info
            info=$(redis-cli -h 127.0.0.1 -p "$port" cluster info 2>/dev/null | tr -d '\r')
            case "$info" in
                *cluster_state:ok*cluster_slots_ok:16384*cluster_known_nodes:6*cluster_size:3*) ;;
                *) ready=0 ;;
            esac
        done
        [ "$ready" = 1 ] && break
        sleep 0.1
    done
    [ "$ready" = 1 ] || { stop_all "$dir"; die "the cluster did not become ready within 10 s"; }
    # Replicas have finished their first sync (a failover right away must have data).
    for _ in $(seq 1 100); do
        local synced=0
        for i in 0 1 2 3 4 5; do
            port=$((base + i))
            case "$(redis-cli -h 127.0.0.1 -p "$port" info replication 2>/dev/null | tr -d '\r')" in
                *role:slave*master_link_status:up*) synced=$((synced + 1)) ;;
            esac
        done
        [ "$synced" = 3 ] && break
        sleep 0.1
    done
    for i in 0 1 2 3 4 5; do
        port=$((base + i))
        pid=$(node_pid "$dir" "$port") || { stop_all "$dir"; die "node $port has no live PID"; }
        echo "$port $pid"
    done
}

case "${1:-}" in
    start)
        [ $# = 3 ] || usage
        check_dir "$2"
        start "$2" "$3"
        ;;
    kill)
        [ $# = 3 ] || usage
        check_dir "$2"
        check_port "$3"
        pid=$(node_pid "$2" "$3") || die "no live node of $2 on port $3"
        kill -KILL "$pid" || die "kill $pid failed"
        echo "$pid"
        ;;
    restart)
        [ $# = 3 ] || usage
        check_dir "$2"
        check_port "$3"
        [ -d "$2/$3" ] || die "no node of $2 on port $3"
        ! node_pid "$2" "$3" >/dev/null || die "the node on port $3 is running"
        rm -f "$2/$3.pid"
        start_node "$2" "$3" || die "redis-server on port $3 did not start"
        wait_node "$2" "$3" || die "node $3 did not answer within 5 s (see $2/$3.log)"
        node_pid "$2" "$3" || die "node $3 has no live PID"
        ;;
    masters)
        [ $# = 2 ] || usage
        check_dir "$2"
        for f in "$2"/*.pid; do
            [ -e "$f" ] || continue
            port=$(basename "$f" .pid)
            node_pid "$2" "$port" >/dev/null || continue
            case "$(redis-cli -h 127.0.0.1 -p "$port" role 2>/dev/null | head -n 1)" in
                master) echo "$port" ;;
            esac
        done
        ;;
    stop)
        [ $# = 2 ] || usage
        check_dir "$2"
        [ -d "$2" ] || exit 0
        stop_all "$2"
        rm -rf "$2"
        ;;
    *) usage ;;
esac
