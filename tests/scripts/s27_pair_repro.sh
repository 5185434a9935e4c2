#!/bin/sh
# Reproduces s27_two_stores_never_half_applied_* by hand: 4 processes x 3 tasks x 100
# updates, each incrementing fragment a (SQLite file) and b (Redis or PostgreSQL) in one
# `run`, default Config; then prints a, b and the children's stats. Every run returned
# Ok, so a and b should both be 1200.
#
#   tests/scripts/s27_pair_repro.sh BIN [generated|explicit] [redis|postgres]
#
# BIN: the cross_process test binary, e.g. $(ls -t target/debug/deps/cross_process-* | grep -v '\.d$' | head -1)
# `explicit`: every update carries its own explicit update id (default: generated ids).
set -eu
BIN=$1
IDS=${2:-generated}
B=${3:-redis}
TAG=repro_$$_$(date +%s%N)
DB=/tmp/multisession-xp-$TAG.db
CHAT=-$(date +%s%N | cut -c 8-17)
case $B in
  redis) SPEC_B="redis=ms-xp-$TAG:" ;;
  postgres) SPEC_B="postgres=ms_xp_$TAG" ;;
  *) echo "unknown store $B" >&2; exit 2 ;;
esac
export MSXP_A="sqlite=$DB" MSXP_B="$SPEC_B" MSXP_CHAT=$CHAT MSXP_TASKS=3 MSXP_PER_TASK=100
run() { "$BIN" --exact child_worker --nocapture --test-threads=1 | grep -o 'MSXP .*' | sed "s/^/[$1] /"; }
MSXP_MODE=show run setup  # creates the tables before the workers start
start=$(date +%s%N)
for p in 0 1 2 3; do
  if [ "$IDS" = explicit ]; then
    MSXP_MODE=pair MSXP_ID_BASE=$((1000000 * (p + 1))) run "p$p" &
  else
    MSXP_MODE=pair run "p$p" &
  fi
done
wait
echo "wall: $(( ($(date +%s%N) - start) / 1000000 )) ms"
MSXP_MODE=show run result
rm -f "$DB" "$DB-wal" "$DB-shm"
case $B in
  redis) redis-cli -u "${MULTISESSION_REDIS_URL:-redis://127.0.0.1:6379}" --scan --pattern "ms-xp-$TAG:*" \
           | xargs -r redis-cli -u "${MULTISESSION_REDIS_URL:-redis://127.0.0.1:6379}" DEL >/dev/null ;;
  postgres) psql "${MULTISESSION_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}" -qc \
           "DROP TABLE IF EXISTS ms_xp_$TAG; DROP SEQUENCE IF EXISTS ms_xp_${TAG}_revision_seq" 2>/dev/null || true ;;
esac
