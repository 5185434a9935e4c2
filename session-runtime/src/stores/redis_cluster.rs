//! What a [`RedisStore`](super::RedisStore) needs to spread over a Redis Cluster: one
//! connection type for a single server and for a cluster, and the key layout in buckets.
//!
//! On a cluster, every session key belongs to one of `N` buckets (CRC16 of the key, modulo
//! `N`). A bucket is a hash tag (`{t}`) prefixed to each of its Redis keys: its sessions'
//! hashes, its revision counter and its listing index, so the apply script of one bucket
//! touches keys of one slot only. The tags are chosen so the buckets' slots are evenly
//! spaced over the 16384 slots: any cluster that gives each master a contiguous range of
//! slots (what `redis-cli --cluster create` and rebalancing do) holds an even share of the
//! buckets on every master. A single server is the same layout with one bucket and no tag.

use std::time::Duration;

use redis::{
    Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value,
    aio::{ConnectionLike, ConnectionManager},
};
use tokio::time::Instant;

/// The number of hash slots of a Redis Cluster.
pub(crate) const SLOTS: u16 = 16384;

/// A connection to a single server (reconnecting by itself) or to a cluster (routing each
/// command to the master of its key's slot). Cheap to clone; clones share the connection.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConn),
}

/// A cluster connection that follows redirections itself.
///
/// The client is built without retries, since a command resent after its connection
/// dropped may run twice. A redirection is different: `MOVED`, `ASK`, `TRYAGAIN` and
/// `CLUSTERDOWN` are answers a node gives *instead of* running a command, so sending it
/// again cannot apply it twice. After a failover the first command to a moved slot gets
/// `MOVED` while the client rebuilds its slot map (from nodes that may not all have
/// heard of the failover yet), so the command is sent again, after a short pause, until
/// it gets another answer or `budget` (the store's response timeout) is spent; then the
/// last redirection is the error (a refusal: not written).
///
/// Every pipeline the store sends keeps to one slot and is either reads only or one
/// write followed by `WAIT` (which has no key): a redirection anywhere in it means its
/// write, if any, was refused, so the whole pipeline is sent again.
#[derive(Clone)]
pub(crate) struct ClusterConn {
    pub(crate) conn: redis::cluster_async::ClusterConnection,
    pub(crate) budget: Duration,
}

/// Whether a node answered with a redirection instead of running the command.
fn is_redirection(kind: Option<ServerErrorKind>) -> bool {
    matches!(
        kind,
        Some(
            ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
        )
    )
}

fn redirected(error: &RedisError) -> bool {
    match error.kind() {
        ErrorKind::Server(kind) => is_redirection(Some(kind)),
        _ => false,
    }
}

/// The pause before the `attempt`-th resend (1 ms doubling to 64 ms).
fn pause(attempt: u32) -> Duration {
    Duration::from_millis(1 << attempt.min(6))
}

impl ClusterConn {
    async fn command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        let deadline = Instant::now() + self.budget;
        let mut attempt = 0;
        loop {
            match self.conn.req_packed_command(cmd).await {
                Err(error) if redirected(&error) && Instant::now() + pause(attempt) < deadline => {
                    tokio::time::sleep(pause(attempt)).await;
                    attempt += 1;
                }
                Ok(Value::ServerError(error))
                    if is_redirection(error.kind())
                        && Instant::now() + pause(attempt) < deadline =>
                {
                    tokio::time::sleep(pause(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn commands(
        &mut self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let deadline = Instant::now() + self.budget;
        let mut attempt = 0;
        loop {
            let result = self.conn.req_packed_commands(pipeline, offset, count).await;
            let again = match &result {
                Err(error) => redirected(error),
                Ok(values) => values.iter().any(|value| {
                    matches!(value, Value::ServerError(error) if is_redirection(error.kind()))
                }),
            };
            if !again || Instant::now() + pause(attempt) >= deadline {
                return result;
            }
            tokio::time::sleep(pause(attempt)).await;
            attempt += 1;
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => Box::pin(conn.command(cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => Box::pin(conn.commands(pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.conn.get_db(),
        }
    }
}

/// The Redis keys of one bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bucket {
    /// `{t}` on a cluster, empty on a single server: the start of every key of the bucket.
    pub(crate) tag: Vec<u8>,
    /// The revision counter (`INCR`).
    pub(crate) counter: Vec<u8>,
    /// The listing index (a sorted set of plain keys).
    pub(crate) index: Vec<u8>,
}

impl Bucket {
    fn new(tag: Vec<u8>, prefix: &[u8]) -> Self {
        let with = |suffix: &[u8]| [tag.as_slice(), prefix, suffix].concat();
        Bucket {
            counter: with(b"rev"),
            index: with(b"idx"),
            tag,
        }
    }

    /// The Redis key of the session `key` in this bucket.
    pub(crate) fn data_key(&self, prefix: &[u8], key: &[u8]) -> Vec<u8> {
        [self.tag.as_slice(), prefix, b"s:", key].concat()
    }
}

/// The cluster slot of a hash tag's content (or of a whole key without a tag).
pub(crate) fn slot_of(bytes: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(bytes) % SLOTS
}

/// The bucket (of `n`) a session key belongs to.
pub(crate) fn bucket_of(key: &[u8], n: usize) -> usize {
    if n <= 1 {
        0
    } else {
        usize::from(crc16::State::<crc16::XMODEM>::calculate(key)) % n
    }
}

/// The buckets of a store with key prefix `prefix`: one without a tag for a single server,
/// `n` (1 ..= 16384) with evenly spaced slots for a cluster.
pub(crate) fn buckets(prefix: &[u8], cluster: Option<usize>) -> Vec<Bucket> {
    let Some(n) = cluster else {
        return vec![Bucket::new(Vec::new(), prefix)];
    };
    tags(n)
        .into_iter()
        .map(|tag| Bucket::new(tag, prefix))
        .collect()
}

/// `n` hash tags, the i-th in slot `i * 16384 / n` (the middle of its share): the first
/// hex number (`{0}`, `{1}`, ... `{a3f}`) landing there. The same on every machine and in
/// every version, since keys are found by it.
fn tags(n: usize) -> Vec<Vec<u8>> {
    let slots = usize::from(SLOTS);
    let n = n.clamp(1, slots);
    let share = slots / n;
    // Which bucket wants each slot.
    let mut wanted = vec![usize::MAX; slots];
    for i in 0..n {
        wanted[i * slots / n + share / 2] = i;
    }
    let mut tags: Vec<Option<Vec<u8>>> = vec![None; n];
    let mut missing = n;
    let mut candidate: u64 = 0;
    // Each candidate hits a given slot with probability 1/16384; all `n` slots are hit
    // after ~16384 · ln(n) candidates (coupon collector), so this bound is never reached.
    while missing > 0 && candidate < 64 * u64::from(SLOTS) * 16 {
        let text = format!("{candidate:x}");
        let slot = usize::from(slot_of(text.as_bytes()));
        let bucket = wanted[slot];
        if bucket != usize::MAX && tags[bucket].is_none() {
            tags[bucket] = Some(format!("{{{text}}}").into_bytes());
            missing -= 1;
        }
        candidate += 1;
    }
    tags.into_iter()
        .enumerate()
        // Unreachable in practice; still a valid tag, only not at its ideal slot.
        .map(|(i, tag)| tag.unwrap_or_else(|| format!("{{b{i}}}").into_bytes()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot_of(b"123456789"), 0x31C3 % SLOTS);
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"bar"), 5061);
    }

    #[test]
    fn tags_land_evenly_and_never_change() {
        for n in [1, 3, 7, 256, 1024, 16384] {
            let tags = tags(n);
            assert_eq!(tags.len(), n);
            let share = 16384 / n;
            for (i, tag) in tags.iter().enumerate() {
                assert_eq!(tag.first(), Some(&b'{'));
                assert_eq!(tag.last(), Some(&b'}'));
                let inner = &tag[1..tag.len() - 1];
                assert!(!inner.contains(&b'}') && !inner.is_empty());
                assert_eq!(
                    usize::from(slot_of(inner)),
                    i * 16384 / n + share / 2,
                    "bucket {i} of {n}"
                );
            }
        }
        // Keys are found by these: they must never change between versions.
        let first: Vec<String> = tags(256)
            .iter()
            .take(3)
            .map(|t| String::from_utf8(t.clone()).unwrap())
            .collect();
        assert_eq!(first, PINNED_TAGS_256);
    }

    /// The first tags of the default 256 buckets, as the first version computed them.
    const PINNED_TAGS_256: [&str; 3] = ["{e8a}", "{1f6c}", "{40da2}"];

    #[test]
    fn buckets_share_one_slot_per_bucket() {
        let buckets = buckets(b"bot:", Some(256));
        // Redis' rule: the slot of a key is that of its first `{...}` with something inside.
        fn key_slot(key: &[u8]) -> u16 {
            let open = key.iter().position(|&b| b == b'{');
            let len = open.and_then(|o| key[o + 1..].iter().position(|&b| b == b'}'));
            match (open, len) {
                (Some(open), Some(len)) if len > 0 => slot_of(&key[open + 1..open + 1 + len]),
                _ => slot_of(key),
            }
        }
        for bucket in &buckets {
            // A prefix or key with braces of its own does not move a key out of its bucket.
            let data = bucket.data_key(b"{bot}:", b"count:{42}");
            let slot = key_slot(&bucket.counter);
            assert_eq!(key_slot(&data), slot);
            assert_eq!(key_slot(&bucket.index), slot);
            assert_eq!(slot, slot_of(&bucket.tag[1..bucket.tag.len() - 1]));
        }
        let single = super::buckets(b"bot:", None);
        assert_eq!(single.len(), 1);
        assert_eq!(single[0].data_key(b"bot:", b"count:42"), b"bot:s:count:42");
        assert_eq!(single[0].counter, b"bot:rev");
        assert_eq!(single[0].index, b"bot:idx");
        assert_eq!(bucket_of(b"anything", 1), 0);
        assert!((0..1000).all(|i| bucket_of(format!("k{i}").as_bytes(), 256) < 256));
    }
}
