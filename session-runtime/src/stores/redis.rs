//! Redis: sessions as small hashes, compare-and-set in Lua, native expiry; a single server
//! or a Redis Cluster.
//!
//! Layout under the configured key prefix `P` (default `multisession:`), on a single server:
//!
//! | Redis key    | type    | holds                                                    |
//! |--------------|---------|----------------------------------------------------------|
//! | `P` `s:` key | hash    | `v`: the value bytes, `r`: its revision; `PEXPIRE` = TTL |
//! | `P` `rev`    | string  | the creation counter (`INCR` on creates and blind writes) |
//! | `P` `idx`    | sorted set | every session key (score 0), for ordered listing      |
//!
//! On a cluster ([`RedisStore::connect_cluster`]) the same keys exist once per bucket, each
//! starting with the bucket's hash tag (`{t}P s:key`, `{t}P rev`, `{t}P idx`): a session key
//! belongs to one bucket (CRC16 of the key modulo the bucket count), so it lives in one slot,
//! and the buckets' slots are spread evenly over all masters. There is no global key.
//!
//! Every write goes through one Lua script per bucket, so a batch (checks, then writes,
//! revisions, expiry and index) is atomic within a bucket and takes one round trip. The
//! usual writes of the lazy runtime (compare-and-set puts, on a revision or on absence)
//! take a smaller script: an update in place touches only its hash (`HGET`, `HSET`,
//! `PEXPIRE`/`PERSIST`), and its revision becomes the one read plus one; creates and
//! blind writes take the next value `c` of the counter as the revision `c × 10^9` (and
//! add the key to the index), so a key's revisions never repeat, not even after a
//! delete. Keys and
//! values are passed as binary-safe arguments; nothing is ever interpolated into a command
//! or a pattern.

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use futures_util::future::join_all;
use redis::{
    Client, ErrorKind, RedisError, Script, ServerErrorKind,
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClient,
};

use super::redis_cluster::{self, Bucket, Conn};
use super::redis_combine::{self, COMBINE_LUA, Combiner};
use crate::store::{
    Capabilities, Expect, Outcome, Page, Record, Store, StoreError, Write, prefix_end,
};

/// Checks every precondition, then applies every write; all of the batch or none of it.
///
/// KEYS: counter, index, then one data key per write.
/// ARGV: per write, seven values: op (`P` put, `U` put in place: a compare-and-set put of a
/// key written once in the batch, `D` delete), expect (`A` any, `N` absent, `R` revision),
/// the expected revision, the new revision of a `U` (the expected one plus one, computed
/// by the client: Lua's numbers are doubles, exact only to 2^53), the value, the TTL in ms
/// (`0`: none), then the plain key (for the index). Returns, when applied, an array: 1,
/// then per write the revision it stored (0 for a delete); 0 on a failed precondition.
///
/// Revisions: a put that (re)creates a key or overwrites it blindly takes the next value
/// `c` of the bucket's counter and stores `c` followed by nine zeros (`c * 10^9`, written
/// as text); a compare-and-set put in place stores the revision it expected plus one. So
/// the counter moves only on creates and blind writes, and a key's revisions never
/// repeat, not even after a delete: a new incarnation starts above everything an earlier
/// one reached, unless that one was updated in place 10^9 times. The counter stays below
/// 1.8 × 10^10 (the largest `c` whose revisions fit in 64 bits): past it the script refuses
/// to write. Revisions stored by earlier versions (the counter's plain values) are below
/// every revision made from the counter since.
///
/// Redis does not roll a script back: an error after its first write leaves the writes
/// before it in place. So the first loop checks everything a write could fail on (the
/// counter's and the index's types and the counter's value, the arguments, the
/// preconditions; `HGET` on a key of another type raises here) and writes nothing; an
/// error from it means nothing was written. Writes then go through `redis.pcall`: the
/// first one failing (an out-of-memory or read-only refusal) is returned as it is,
/// nothing having been written yet; a later one (nothing left that could fail, short of
/// an ACL forbidding one write command but not the others) is returned as a `MSPARTIAL`
/// error, which the store reports as an unknown outcome, never as "not written".
const APPLY_LUA: &str = r"
local n = #KEYS - 2
local function kind(key)
  return redis.call('TYPE', key)['ok']
end
local counter = kind(KEYS[1])
if counter == 'string' then
  local last = redis.call('GET', KEYS[1])
  if #last > 11 or not (last == '0' or string.find(last, '^[1-9]%d*$'))
      or tonumber(last) >= 17999999999 then
    return redis.error_reply('ERR the revision counter is not a non-negative integer below 1.8e10')
  end
elseif counter ~= 'none' then
  return redis.error_reply('WRONGTYPE the revision counter is not a string')
end
local index = kind(KEYS[2])
if index ~= 'none' and index ~= 'zset' then
  return redis.error_reply('WRONGTYPE the listing index is not a sorted set')
end
if #ARGV ~= n * 7 then
  return redis.error_reply('ERR malformed arguments of the write script')
end
for i = 1, n do
  local a = (i - 1) * 7
  local op, expect, ttl = ARGV[a + 1], ARGV[a + 2], ARGV[a + 6]
  if (op ~= 'P' and op ~= 'D' and op ~= 'U') or (expect ~= 'A' and expect ~= 'N' and expect ~= 'R')
      or (op == 'U' and (expect ~= 'R' or not string.find(ARGV[a + 4], '^[1-9]%d*$')))
      or not string.find(ttl, '^%d+$') or tonumber(ttl) > 1e13 then
    return redis.error_reply('ERR malformed arguments of the write script')
  end
end
for i = 1, n do
  local a = (i - 1) * 7
  local expect = ARGV[a + 2]
  if expect ~= 'A' then
    local current = redis.call('HGET', KEYS[i + 2], 'r')
    if expect == 'N' then
      if current then return 0 end
    elseif current ~= ARGV[a + 3] then
      return 0
    end
  end
end
local wrote = false
local function write(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then
    if wrote then
      error({err = 'MSPARTIAL a write failed after others of its batch were applied: ' .. reply.err})
    end
    error(reply)
  end
  wrote = true
  return reply
end
local revisions = {1}
for i = 1, n do
  local a = (i - 1) * 7
  local key = KEYS[i + 2]
  if ARGV[a + 1] == 'U' then
    local revision = ARGV[a + 4]
    revisions[i + 1] = revision
    write('HSET', key, 'v', ARGV[a + 5], 'r', revision)
    if ARGV[a + 6] ~= '0' then
      write('PEXPIRE', key, ARGV[a + 6])
    else
      write('PERSIST', key)
    end
  elseif ARGV[a + 1] == 'P' then
    local revision = write('INCR', KEYS[1]) .. '000000000'
    revisions[i + 1] = revision
    write('DEL', key)
    write('HSET', key, 'v', ARGV[a + 5], 'r', revision)
    if ARGV[a + 6] ~= '0' then write('PEXPIRE', key, ARGV[a + 6]) end
    write('ZADD', KEYS[2], 0, ARGV[a + 7])
  else
    revisions[i + 1] = 0
    write('DEL', key)
    write('ZREM', KEYS[2], ARGV[a + 7])
  end
end
return revisions
";

/// The lazy runtime's usual writes, cheaper: compare-and-set puts, each key written once,
/// either in place of a key that exists ([`Expect::Revision`]) or creating one
/// ([`Expect::Absent`]). No type or argument checks (the client builds the arguments:
/// revisions are digits, TTLs capped integers), no `pcall`: an update in place touches
/// only its hash; a create takes the counter and adds the key to the listing index.
///
/// KEYS: counter, index, then one data key per write. ARGV: per write, five values: `U`
/// (in place) or `N` (create), the expected revision (`U`) or the plain key (`N`, for the
/// index), the new revision (`U`: the expected plus one; `N`: empty, taken from the
/// counter as for [`APPLY_LUA`]), the value, the TTL in ms (`0`: none). Returns, when
/// applied, an array: 1, then the revision of every write; 0 on a failed precondition.
///
/// Nothing is written before every check passed and every command that could fail has
/// run: the checks (`HGET` of a key of another type raises, also for a create), then the counter (`INCR`
/// raises on a counter that is not an integer; past its limit the script stops) and the
/// index (`ZADD` raises on a key of another type), then the session hashes, which cannot
/// fail (`HSET` on a hash or a missing key, `PEXPIRE` with a valid time, `PERSIST`). So
/// an error leaves no session written, as for [`APPLY_LUA`] (at most a counter value
/// skipped, or an index entry without a session, which listings prune).
const PUT_LUA: &str = r"
local n = #KEYS - 2
for i = 1, n do
  local a = i * 5 - 5
  if ARGV[a + 1] == 'U' then
    if redis.call('HGET', KEYS[i + 2], 'r') ~= ARGV[a + 2] then return 0 end
  elseif redis.call('HGET', KEYS[i + 2], 'r') then
    return 0
  end
end
local revisions = {1}
for i = 1, n do
  local a = i * 5 - 5
  if ARGV[a + 1] == 'U' then
    revisions[i + 1] = ARGV[a + 3]
  else
    local c = redis.call('INCR', KEYS[1])
    if c > 17999999999 then
      return redis.error_reply('ERR the revision counter is exhausted')
    end
    revisions[i + 1] = c .. '000000000'
    redis.call('ZADD', KEYS[2], 0, ARGV[a + 2])
  end
end
for i = 1, n do
  local a = i * 5 - 5
  local key = KEYS[i + 2]
  redis.call('HSET', key, 'v', ARGV[a + 4], 'r', revisions[i + 1])
  if ARGV[a + 5] ~= '0' then
    redis.call('PEXPIRE', key, ARGV[a + 5])
  elseif ARGV[a + 1] == 'U' then
    redis.call('PERSIST', key)
  end
end
return revisions
";

/// The error code the apply script gives a write that failed after others of its batch
/// were applied.
const PARTIAL_CODE: &str = "MSPARTIAL";

/// The longest TTL passed to Redis (100 years, in ms); longer ones are capped to it, so
/// `PEXPIRE` can never fail on an out-of-range time once the batch has started writing.
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Drops index entries whose session is gone (expired), checking each at the moment of
/// removal so a key re-created meanwhile stays listed.
///
/// KEYS: index, then one data key per entry. ARGV: the plain keys. Returns the count removed.
const PRUNE_LUA: &str = r"
local removed = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i - 1])
  end
end
return removed
";

/// Counts the live sessions of a bucket's index in a range, one chunk per call, so a large
/// index never blocks the server for long.
///
/// KEYS: the index. ARGV: min and max (`ZRANGEBYLEX` syntax), the start of the bucket's
/// data keys (tag, prefix, `s:`), the chunk size. Returns the live count and, when the
/// chunk was full, the last member read (the next call starts after it; `false`, a nil
/// reply, otherwise). The data keys
/// share the index's hash tag: one slot, also on a cluster.
const COUNT_LUA: &str = r"
local members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, tonumber(ARGV[4]))
local live = 0
for _, member in ipairs(members) do
  live = live + redis.call('EXISTS', ARGV[3] .. member)
end
if #members == tonumber(ARGV[4]) then
  return {live, members[#members]}
end
return {live, false}
";

/// How many index entries one call of the count script reads.
const COUNT_CHUNK: usize = 5000;

/// Options of a [`RedisStore`].
///
/// ```
/// use multisession::stores::RedisConfig;
/// use std::time::Duration;
///
/// let config = RedisConfig::new()
///     .key_prefix("pizza-bot:")
///     .connect_timeout(Duration::from_secs(2))
///     .response_timeout(Duration::from_secs(1));
/// ```
#[derive(Clone, Debug)]
pub struct RedisConfig {
    key_prefix: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    reconnect_attempts: usize,
    cluster_buckets: usize,
    wait_for_replicas: Option<(usize, Duration)>,
    client_tracking: bool,
    combine_writes: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            key_prefix: "multisession:".to_owned(),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            reconnect_attempts: 3,
            cluster_buckets: DEFAULT_CLUSTER_BUCKETS,
            wait_for_replicas: None,
            client_tracking: false,
            combine_writes: false,
        }
    }
}

/// How many buckets a cluster store spreads its sessions over by default.
const DEFAULT_CLUSTER_BUCKETS: usize = 256;

impl RedisConfig {
    /// The defaults: prefix `multisession:`, 5 s connect and response timeouts, 3
    /// reconnect attempts per outage before an operation fails.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::stores::{RedisConfig, RedisStore};
    ///
    /// // The same as `RedisStore::connect(url)`.
    /// let store = RedisStore::connect_with("redis://127.0.0.1:6379", RedisConfig::new()).await?;
    /// # Ok(()) }
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The prefix of every Redis key the store uses, so several bots (or tests) can share
    /// one database. Any bytes; two stores with the same prefix share their sessions.
    ///
    /// On a Redis Cluster, use [`RedisStore::connect_cluster`], which spreads the store's
    /// keys over every master by itself (any prefix works there, braces included). A
    /// store opened with [`connect_with`](RedisStore::connect_with) on a cluster node
    /// needs all its keys in one slot: wrap the prefix in braces (a hash tag), which puts
    /// the whole store on one master.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::{store::Store, stores::{RedisConfig, RedisStore}};
    ///
    /// let url = "redis://127.0.0.1:6379";
    /// let pizza = RedisStore::connect_with(url, RedisConfig::new().key_prefix("{pizza-bot}:")).await?;
    /// let quiz = RedisStore::connect_with(url, RedisConfig::new().key_prefix("{quiz-bot}:")).await?;
    /// pizza.write("count:1", b"3", None).await?; // Redis key `{pizza-bot}:s:count:1`
    /// assert!(quiz.read("count:1").await?.is_none());
    /// # Ok(()) }
    /// ```
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// How long to wait for a connection (the first one, and each reconnect). Past it
    /// the operation fails with [`StoreError::Timeout`] (or the connect fails).
    ///
    /// An unreachable server is an error soon, not a hang:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use multisession::stores::{RedisConfig, RedisStore};
    /// use std::time::{Duration, Instant};
    ///
    /// let config = RedisConfig::new().connect_timeout(Duration::from_millis(200));
    /// let started = Instant::now();
    /// // Nothing listens on port 1.
    /// assert!(RedisStore::connect_with("redis://127.0.0.1:1", config).await.is_err());
    /// assert!(started.elapsed() < Duration::from_secs(5));
    /// # }
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one operation may wait for its reply. Past it it fails with
    /// [`StoreError::Timeout`]; a write that timed out may still have been applied (its
    /// outcome is unknown).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::{Config, stores::{RedisConfig, RedisStore}};
    /// use std::time::Duration;
    ///
    /// // Keep it below the runtime's `op_timeout`, so the store's own error comes first.
    /// let config = RedisConfig::new().response_timeout(Duration::from_secs(1));
    /// let store = RedisStore::connect_with("redis://127.0.0.1:6379", config).await?;
    /// let runtime = Config::new().op_timeout(Some(Duration::from_secs(2)));
    /// # let _ = (store, runtime);
    /// # Ok(()) }
    /// ```
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How many times to try reconnecting after the connection dropped, with jittered
    /// exponential backoff from 100 ms, before operations fail (later operations try
    /// again).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::stores::{RedisConfig, RedisStore};
    ///
    /// // Ride out a failover of a few seconds before operations fail.
    /// let config = RedisConfig::new().reconnect_attempts(6);
    /// let store = RedisStore::connect_with("redis://127.0.0.1:6379", config).await?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    pub fn reconnect_attempts(mut self, attempts: usize) -> Self {
        self.reconnect_attempts = attempts;
        self
    }

    /// On a cluster ([`RedisStore::connect_cluster`]): how many buckets the sessions are
    /// spread over (1 ..= 16384; default 256). Each bucket is one hash slot holding its
    /// sessions, its revision counter and its listing index; the buckets' slots are evenly
    /// spaced, so every master of a cluster with up to a few dozen masters holds an even
    /// share. A batch touching several buckets is split per bucket; a listing merges all of
    /// them (more buckets: a wider spread, a slower listing).
    ///
    /// **Every process of a bot must use the same count, and it must not change while
    /// sessions are stored**: a session key is found through its bucket. Ignored on a
    /// single server.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::stores::{RedisConfig, RedisStore};
    ///
    /// let nodes = ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001", "redis://127.0.0.1:7002"];
    /// let config = RedisConfig::new().key_prefix("pizza-bot:").cluster_buckets(1024);
    /// let store = RedisStore::connect_cluster(&nodes, config).await?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    pub fn cluster_buckets(mut self, buckets: usize) -> Self {
        self.cluster_buckets = buckets;
        self
    }

    /// Durability on failover: after each write, wait (Redis `WAIT`) until at least
    /// `replicas` replicas of its master have it, for at most `timeout`. Redis replicates
    /// asynchronously, so without this a write acknowledged by a master that crashes
    /// before its replica received it is lost when the replica takes over.
    ///
    /// A write that fewer replicas confirmed in time has been applied on the master but
    /// may not survive a failover: it fails with [`StoreError::Unknown`], which the
    /// runtime reports as an unknown outcome (re-running the update is safe, rule S25).
    /// `WAIT` is not a consensus protocol: a write confirmed by a replica that is not the
    /// one promoted can still be lost; with one replica per master it is the one.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::stores::{RedisConfig, RedisStore};
    /// use std::time::Duration;
    ///
    /// let nodes = ["redis://127.0.0.1:7000"];
    /// let config = RedisConfig::new().wait_for_replicas(1, Duration::from_millis(500));
    /// let store = RedisStore::connect_cluster(&nodes, config).await?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    pub fn wait_for_replicas(mut self, replicas: usize, timeout: Duration) -> Self {
        self.wait_for_replicas = (replicas > 0).then_some((replicas, timeout));
        self
    }

    /// Speak RESP3 and accept Redis' client-side-caching invalidations, so a
    /// [`CachedStore`](crate::stores::CachedStore) in front of this store can be told at
    /// once when another process writes a key it holds
    /// ([`RedisStore::track_for`]). Needs Redis 6 or newer; single servers only (not
    /// [`connect_cluster`](RedisStore::connect_cluster)). Default: off.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::stores::{RedisConfig, RedisStore};
    ///
    /// let config = RedisConfig::new().client_tracking(true);
    /// let store = RedisStore::connect_with("redis://127.0.0.1:6379", config).await?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    pub fn client_tracking(mut self, on: bool) -> Self {
        self.client_tracking = on;
        self
    }

    /// Send the compare-and-set commits that wait at the same moment in one script call
    /// (group commit). Each commit's writes are still checked and applied as a unit, as
    /// if the commits had been sent one after another; what one commit's failure or
    /// conflict means for it is unchanged, and it changes nothing for the others (a commit
    /// given up while it waits is not sent at all). For a Redis server shared by many
    /// concurrent handlers or bot processes: a script call has a fixed cost, so one call
    /// of eight commits costs the server about half as much per commit as eight calls;
    /// with 256 concurrent handlers the replay bench's Redis CPU per update fell by a
    /// fifth to a third and its throughput rose by 0–13% (on 2 cores the bot's own
    /// process is the limit; `BENCHMARKS.md`). Sequentially it makes no measurable
    /// difference.
    ///
    /// Covers the lazy runtime's usual writes (compare-and-set puts of distinct keys);
    /// other batches go as before. Single servers only: ignored by
    /// [`connect_cluster`](RedisStore::connect_cluster) and with
    /// [`wait_for_replicas`](Self::wait_for_replicas). Default: off.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::stores::{RedisConfig, RedisStore};
    ///
    /// let config = RedisConfig::new().combine_writes(true);
    /// let store = RedisStore::connect_with("redis://127.0.0.1:6379", config).await?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    pub fn combine_writes(mut self, on: bool) -> Self {
        self.combine_writes = on;
        self
    }
}

/// Sessions in Redis, on one multiplexed connection that reconnects by itself. Cheap to
/// clone; clones share the connection.
///
/// It has every capability:
///
/// - [`Store::read`] is one `HMGET`; [`Store::read_many`] pipelines them: one round trip
///   for any number of keys;
/// - [`Store::apply`] (compare-and-set, rule S17) runs one Lua script: all preconditions
///   are checked, then every write is applied, atomically and in one round trip;
///   compare-and-set puts (the lazy runtime's usual writes) take a smaller one, and an
///   update in place touches nothing but its hash;
/// - a key's revisions never repeat, not even after a delete: an update in place adds
///   one, a create takes the next value of a counter per prefix, scaled above every
///   revision before it;
/// - expiry is Redis' own (`PEXPIRE`); [`Store::list`] walks a sorted index of keys, in
///   key order, each live key once. Expired keys leave entries in that index until a
///   listing meets them or [`RedisStore::sweep_expired`] runs: with TTLs and no listing,
///   run it on a schedule.
///
/// **Failures.** An unreachable server is a [`StoreError`] within the connect timeout,
/// never a hang or a panic. When the connection drops, the operations in flight fail and
/// the store reconnects in the background; it recovers by itself once the server is back.
/// Nothing is retried behind your back (except a script the server does not know yet,
/// which is loaded and run again: the server had refused it without running it).
///
/// **Timeouts and failed writes.** A failed [`Store::apply`] (and `write`, `delete`) says
/// whether the batch may have landed (rule S26):
///
/// - not written ([`StoreError::Backend`]): the connection was refused (nothing was sent),
///   or Redis answered with an error. The script checks everything a write could fail on
///   before its first write, because Redis does not roll a script back; so an error
///   answer means none of the batch was applied;
/// - outcome unknown ([`StoreError::Unknown`]): the request may have reached the server
///   but its answer was lost (the connection dropped or reset, an I/O error, an answer
///   that does not parse);
/// - [`StoreError::Timeout`]: no answer within the response timeout. Redis may still
///   execute the script after that (it sits in the server's input buffer, or the server
///   was paused), so this is an unknown outcome as well, and so is the runtime's own
///   `op_timeout` dropping the call.
///
/// The runtime reports such a write as unknown, and because each update changes each
/// fragment at most once (rule S25: the stored record remembers which updates changed
/// it), re-running the same update is safe: it completes the write if it did not land and does not
/// apply it twice if it did.
///
/// The connection is driven by a task on the Tokio runtime that called
/// [`connect`](RedisStore::connect): use the store on that runtime (a store kept after its
/// runtime shut down fails every operation with a backend error).
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use multisession::{ChatContext, MultiSession, stores::{RedisConfig, RedisStore}};
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
/// }
///
/// let config = RedisConfig::new().key_prefix("counter-bot:");
/// let store = RedisStore::connect_with("redis://127.0.0.1:6379", config).await?;
/// let sessions = Bot::builder().default_store(store).build();
/// sessions
///     .run(&ChatContext::new(42), async |s| {
///         *s.count().await? += 1;
///         Ok::<_, multisession::Error>(())
///     })
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    prefix: Vec<u8>,
    /// One without a tag on a single server; the cluster buckets otherwise.
    buckets: Vec<Bucket>,
    apply: Script,
    put: Script,
    prune: Script,
    count: Script,
    response_timeout: Duration,
    wait_for_replicas: Option<(usize, Duration)>,
    /// With [`RedisConfig::client_tracking`]: where invalidations go.
    tracking: Option<Arc<Tracking>>,
    /// With [`RedisConfig::combine_writes`] on a single server: the commits waiting for
    /// the next combined call.
    combiner: Option<Arc<Combiner>>,
    combine: Script,
}

/// Client-side-caching state of a store with [`RedisConfig::client_tracking`].
struct Tracking {
    /// The cache told of other processes' writes (see [`RedisStore::track_for`]).
    #[cfg(feature = "cache")]
    target: std::sync::Mutex<Option<crate::stores::Invalidator>>,
    /// The store, to turn tracking on again after a reconnect.
    store: std::sync::OnceLock<std::sync::Weak<Inner>>,
    /// This store's own writes whose invalidation has not come back yet, per session
    /// key: a count and when the last was sent. Redis announces writes made inside a
    /// script to their own client too (`NOLOOP` does not cover scripts), so each write
    /// expects one echo, which is not passed on. A write that certainly did not land
    /// expects none. An echo older than [`ECHO_WINDOW`] is no longer expected.
    echoes: std::sync::Mutex<std::collections::HashMap<Vec<u8>, (u32, std::time::Instant)>>,
    /// Tracking is on (`track_for` succeeded): only then do writes expect echoes.
    active: std::sync::atomic::AtomicBool,
}

/// How long an invalidation of a key this store wrote counts as that write's echo.
const ECHO_WINDOW: Duration = Duration::from_secs(2);

impl Tracking {
    /// Expects (`+1`) or no longer expects (`-1`) an echo for each of `keys`.
    fn expect_echoes<'k>(&self, keys: impl Iterator<Item = &'k [u8]>, more: bool) {
        if !self.active.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let Ok(mut echoes) = self.echoes.lock() else {
            return;
        };
        let now = std::time::Instant::now();
        // Echoes that never came (tracking was off for a while): forget them.
        if more && echoes.len() >= 4096 {
            echoes.retain(|_, (_, sent)| now.duration_since(*sent) < ECHO_WINDOW);
        }
        for key in keys {
            if more {
                let entry = echoes.entry(key.to_vec()).or_insert((0, now));
                *entry = (entry.0 + 1, now);
            } else if let Some(entry) = echoes.get_mut(key) {
                entry.0 = entry.0.saturating_sub(1);
                if entry.0 == 0 {
                    echoes.remove(key);
                }
            }
        }
    }

    /// Whether an invalidation of `key` is the echo of this store's own write (then it
    /// is consumed).
    #[cfg(feature = "cache")]
    fn is_echo(&self, key: &[u8]) -> bool {
        let Ok(mut echoes) = self.echoes.lock() else {
            return false;
        };
        match echoes.get_mut(key) {
            Some((count, sent)) if *count > 0 && sent.elapsed() < ECHO_WINDOW => {
                *count -= 1;
                if *count == 0 {
                    echoes.remove(key);
                }
                true
            }
            Some(_) => {
                echoes.remove(key);
                false
            }
            None => false,
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("key_prefix", &String::from_utf8_lossy(&self.inner.prefix))
            .field("cluster", &matches!(self.inner.conn, Conn::Cluster(_)))
            .field("buckets", &self.inner.buckets.len())
            .finish_non_exhaustive()
    }
}

/// A Redis error with its context ("redis read: ...").
#[derive(Debug)]
struct RedisFailure {
    context: &'static str,
    source: RedisError,
}

impl fmt::Display for RedisFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis {}: {}", self.context, self.source)
    }
}

impl std::error::Error for RedisFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn corrupt(what: impl fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("redis: {what}"))
}

/// A TTL in whole milliseconds, at least 1 (0 means "none" to the script) and at most
/// [`MAX_TTL_MS`].
/// `eval script numkeys counter index keys...`: a write script's command up to its
/// arguments, for the `count` data keys `keys` of `bucket`.
fn script_keys<K: redis::ToRedisArgs>(
    eval: &str,
    script: &str,
    bucket: &Bucket,
    count: usize,
    keys: impl IntoIterator<Item = K>,
) -> redis::Cmd {
    let mut cmd = redis::cmd(eval);
    cmd.arg(script)
        .arg(count + 2)
        .arg(&bucket.counter)
        .arg(&bucket.index);
    for key in keys {
        cmd.arg(key);
    }
    cmd
}

/// The five [`PUT_LUA`] arguments of a compare-and-set put: `U`, the expected and the
/// new revision (in place), or `N`, the plain key and nothing (a create); then the value
/// and the TTL in ms. `None` for other writes.
fn put_args(write: &Write) -> Option<[std::borrow::Cow<'_, [u8]>; 5]> {
    use std::borrow::Cow::{Borrowed, Owned};
    let Write::Put {
        key,
        value,
        ttl,
        expect,
    } = write
    else {
        return None;
    };
    let [op, second, third] = match expect {
        Expect::Revision(expected) => [
            Borrowed(&b"U"[..]),
            Owned(expected.to_string().into_bytes()),
            Owned((expected + 1).to_string().into_bytes()),
        ],
        _ => [
            Borrowed(&b"N"[..]),
            Borrowed(key.as_bytes()),
            Borrowed(&b""[..]),
        ],
    };
    let ttl = Owned(ttl_millis(*ttl).to_string().into_bytes());
    Some([op, second, third, Borrowed(&value[..]), ttl])
}

fn ttl_millis(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |ttl| {
        u64::try_from(ttl.as_millis())
            .unwrap_or(MAX_TTL_MS)
            .clamp(1, MAX_TTL_MS)
    })
}

/// Whether a failed write certainly never reached Redis, or reached it and was refused
/// before the script wrote anything: then it did not land.
///
/// - a refused connection (the manager was reconnecting: nothing was sent on it), or a
///   failure to set a connection up (authentication, configuration, the handshake);
/// - an error reply: the server answered, and the script checks everything before its
///   first write (see `APPLY_LUA`), so an error from it means nothing was written,
///   except its own `MSPARTIAL`.
///
/// Anything else may have happened after the command was sent: an I/O error (a broken
/// pipe or a reset, also when the connection's driver was already gone, which the error
/// does not tell apart), a reply that does not parse, a reply of an unexpected type. Its
/// outcome is unknown.
fn certainly_not_written(error: &RedisError) -> bool {
    if error.code() == Some(PARTIAL_CODE) {
        return false;
    }
    if error.is_connection_refusal() {
        return true;
    }
    matches!(
        error.kind(),
        ErrorKind::Server(_)
            | ErrorKind::Extension
            | ErrorKind::AuthenticationFailed
            | ErrorKind::InvalidClientConfig
            | ErrorKind::Client
            | ErrorKind::RESP3NotSupported
    )
}

/// The apply script's answer for `n` writes: their revisions if applied, `None` on a
/// failed precondition. Anything else: the script ran, so its outcome is unknown.
fn parse_apply_reply(reply: redis::Value, n: usize) -> Result<Option<Vec<u64>>, StoreError> {
    use redis::Value;
    let unknown =
        |what: String| StoreError::unknown(format!("redis write: the script answered {what}"));
    match reply {
        Value::Int(0) => Ok(None),
        Value::Array(items) if items.len() == n + 1 && items[0] == Value::Int(1) => items[1..]
            .iter()
            .map(|item| match item {
                Value::Int(revision) => u64::try_from(*revision)
                    .map_err(|_| unknown(format!("a negative revision {revision}"))),
                Value::BulkString(text) => std::str::from_utf8(text)
                    .ok()
                    .and_then(|text| text.parse::<u64>().ok())
                    .ok_or_else(|| unknown(format!("the revision {item:?}"))),
                other => Err(unknown(format!("{other:?} where a revision belongs"))),
            })
            .collect::<Result<Vec<u64>, _>>()
            .map(Some),
        other => Err(unknown(format!("{other:?}, not 0 or 1 and {n} revisions"))),
    }
}

/// Forwards Redis' invalidation pushes to the tracked cache: each invalidated Redis key
/// under `data_prefix` as its session key; a flush, a disconnect or anything unreadable as
/// "drop everything". After a disconnect, turns tracking on again.
async fn follow_invalidations(
    mut pushes: tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
    tracking: Arc<Tracking>,
    data_prefix: Vec<u8>,
) {
    while let Some(push) = pushes.recv().await {
        #[cfg(feature = "cache")]
        {
            let target = tracking.target.lock().ok().and_then(|t| t.clone());
            let Some(target) = target else { continue };
            match push.kind {
                redis::PushKind::Invalidate => match push.data.first() {
                    Some(redis::Value::Array(keys)) => {
                        for key in keys {
                            let bytes = match key {
                                redis::Value::BulkString(bytes) => bytes.as_slice(),
                                redis::Value::SimpleString(text) => text.as_bytes(),
                                _ => {
                                    target.invalidate_all();
                                    continue;
                                }
                            };
                            match bytes
                                .strip_prefix(data_prefix.as_slice())
                                .map(std::str::from_utf8)
                            {
                                Some(Ok(key)) if tracking.is_echo(key.as_bytes()) => {}
                                Some(Ok(key)) => target.invalidate(key),
                                // Not a session key of this store: nothing cached under it.
                                Some(Err(_)) | None => {}
                            }
                        }
                    }
                    // `FLUSHALL` / `FLUSHDB` (a null) or an unknown shape.
                    _ => target.invalidate_all(),
                },
                redis::PushKind::Disconnection => {
                    target.invalidate_all();
                    let store = tracking.store.get().and_then(std::sync::Weak::upgrade);
                    if let Some(inner) = store {
                        let store = RedisStore { inner };
                        // Until this succeeds, writes elsewhere are noticed through
                        // conflicts and the staleness bound; try a few times.
                        for attempt in 0..10u32 {
                            if store.enable_tracking().await.is_ok() {
                                target.invalidate_all();
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
                        }
                    }
                }
                _ => {}
            }
        }
        #[cfg(not(feature = "cache"))]
        let _ = (&push, &tracking, &data_prefix);
    }
}

/// What `HMGET key v r` returned, as a record.
fn record(value: Option<Vec<u8>>, revision: Option<String>) -> Result<Option<Record>, StoreError> {
    match (value, revision) {
        (None, None) => Ok(None),
        (Some(value), Some(revision)) => {
            let revision = revision
                .parse::<u64>()
                .map_err(|_| corrupt(format!("revision {revision:?} is not a number")))?;
            Ok(Some(Record::new(value, revision)))
        }
        (Some(_), None) => Err(corrupt("a session hash has no revision field `r`")),
        (None, Some(_)) => Err(corrupt("a session hash has no value field `v`")),
    }
}

impl RedisStore {
    /// Connects with the default [`RedisConfig`]. `url` is a Redis URL:
    /// `redis://[user:password@]host[:port][/db]` or `redis+unix:///path`.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::{store::Store, stores::RedisStore};
    ///
    /// let store = RedisStore::connect("redis://127.0.0.1:6379/0").await?;
    /// store.write("count:1", b"1", None).await?;
    /// assert_eq!(store.read("count:1").await?.unwrap().value, b"1");
    /// # Ok(()) }
    /// ```
    ///
    /// A URL that does not parse is an error at once:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// assert!(multisession::stores::RedisStore::connect("localhost:6379").await.is_err());
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, RedisConfig::default()).await
    }

    /// Connects with `config`; fails (within the connect timeout) if the server cannot be
    /// reached.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::{MultiSession, stores::{RedisConfig, RedisStore}};
    /// use std::time::Duration;
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    /// }
    ///
    /// let config = RedisConfig::new()
    ///     .key_prefix("counter-bot:")
    ///     .connect_timeout(Duration::from_secs(2));
    /// let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    /// let sessions = Bot::builder().default_store(RedisStore::connect_with(&url, config).await?).build();
    /// # let _ = sessions;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with(url: &str, config: RedisConfig) -> Result<Self, StoreError> {
        let bad_url = |source| {
            StoreError::from_error(RedisFailure {
                context: "url",
                source,
            })
        };
        let mut manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(config.reconnect_attempts)
            .set_max_delay(Duration::from_secs(2));
        let (client, tracking) = if config.client_tracking {
            use redis::IntoConnectionInfo;
            let info = url.into_connection_info().map_err(bad_url)?;
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(redis::ProtocolVersion::RESP3);
            let client = Client::open(info.set_redis_settings(settings)).map_err(bad_url)?;
            let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
            manager_config = manager_config.set_push_sender(sender);
            let tracking = Arc::new(Tracking {
                #[cfg(feature = "cache")]
                target: std::sync::Mutex::new(None),
                store: std::sync::OnceLock::new(),
                echoes: std::sync::Mutex::new(std::collections::HashMap::new()),
                active: std::sync::atomic::AtomicBool::new(false),
            });
            tokio::spawn(follow_invalidations(
                receiver,
                tracking.clone(),
                [config.key_prefix.as_bytes(), b"s:"].concat(),
            ));
            (client, Some(tracking))
        } else {
            (Client::open(url).map_err(bad_url)?, None)
        };
        // The manager retries a first connect too; the whole of it is bounded here.
        let budget = config.connect_timeout.saturating_mul(2);
        let conn = tokio::time::timeout(
            budget,
            ConnectionManager::new_with_config(client, manager_config),
        )
        .await
        .map_err(|_| StoreError::Timeout(budget))?
        .map_err(|source| {
            StoreError::from_error(RedisFailure {
                context: "connect",
                source,
            })
        })?;
        let store = Self::with_conn(Conn::Single(conn), config, false, tracking);
        if let Some(tracking) = &store.inner.tracking {
            let _ = tracking.store.set(Arc::downgrade(&store.inner));
        }
        Ok(store)
    }

    /// Connects to a Redis Cluster through any of its nodes (`redis://host:port` each; the
    /// others are discovered), with the sessions spread over all masters in
    /// [`cluster_buckets`](RedisConfig::cluster_buckets) buckets. Fails (within the connect
    /// timeout) if no node can be reached.
    ///
    /// What holds on a cluster:
    ///
    /// - a session key lives in one slot; different keys spread over all masters;
    /// - a batch ([`Store::apply`]) is split per bucket: each part is atomic and
    ///   compare-and-set, the parts are not atomic together (the store does not claim
    ///   [`atomic_batch`](Capabilities::atomic_batch)). The runtime reports a commit of
    ///   which some parts landed as partly written, and re-running the update completes it
    ///   without applying a landed part twice (rule S25: each stored record remembers the
    ///   updates that changed it);
    /// - revisions come from one counter per bucket: they never repeat for a key, not
    ///   even after a delete (a key never changes bucket), and no key is global;
    /// - [`Store::list`] merges the buckets' indexes: in key order, each live key once;
    /// - nothing that may have run is sent again: a command sent to a master that just
    ///   died fails (unknown outcome if it may have run). Redirections (`MOVED`, `ASK`,
    ///   `TRYAGAIN`, `CLUSTERDOWN`), which a node answers *instead of* running a command,
    ///   refresh the slot map and are followed, with short pauses, for up to the
    ///   [`response_timeout`](RedisConfig::response_timeout); the last one is the error
    ///   (not written) if the cluster has not settled by then. After a failover the store
    ///   recovers by itself; no need to rebuild it or the `Sessions`;
    /// - Redis replicates asynchronously: see
    ///   [`wait_for_replicas`](RedisConfig::wait_for_replicas) for writes that survive a
    ///   failover.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use multisession::{ChatContext, MultiSession, stores::{RedisConfig, RedisStore}};
    ///
    /// #[derive(MultiSession)]
    /// struct Bot {
    ///     count: u32,
    /// }
    ///
    /// let nodes = ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"];
    /// let store = RedisStore::connect_cluster(&nodes, RedisConfig::new().key_prefix("counter-bot:")).await?;
    /// let sessions = Bot::builder().default_store(store).build();
    /// sessions
    ///     .run(&ChatContext::new(42), async |s| {
    ///         *s.count().await? += 1;
    ///         Ok::<_, multisession::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// A bucket count out of range is an error before any connection:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use multisession::stores::{RedisConfig, RedisStore};
    ///
    /// let config = RedisConfig::new().cluster_buckets(0);
    /// let error = RedisStore::connect_cluster(&["redis://127.0.0.1:7000"], config).await.unwrap_err();
    /// assert!(error.to_string().contains("cluster_buckets"), "{error}");
    /// # }
    /// ```
    pub async fn connect_cluster(nodes: &[&str], config: RedisConfig) -> Result<Self, StoreError> {
        if !(1..=usize::from(redis_cluster::SLOTS)).contains(&config.cluster_buckets) {
            return Err(StoreError::backend(format!(
                "redis cluster: cluster_buckets must be 1 ..= 16384, not {}",
                config.cluster_buckets
            )));
        }
        if nodes.is_empty() {
            return Err(StoreError::backend("redis cluster: no node URL given"));
        }
        let client = ClusterClient::builder(nodes.iter().copied())
            .connection_timeout(config.connect_timeout)
            .response_timeout(config.response_timeout)
            // No resends: a command resent after its connection dropped may run twice,
            // and its second answer would hide the first (a landed write reported as a
            // conflict). Redirections still refresh the slot map.
            .retries(0)
            .build()
            .map_err(|source| {
                StoreError::from_error(RedisFailure {
                    context: "cluster nodes",
                    source,
                })
            })?;
        let budget = config.connect_timeout.saturating_mul(2);
        let conn = tokio::time::timeout(budget, client.get_async_connection())
            .await
            .map_err(|_| StoreError::Timeout(budget))?
            .map_err(|source| {
                StoreError::from_error(RedisFailure {
                    context: "cluster connect",
                    source,
                })
            })?;
        let conn = Conn::Cluster(redis_cluster::ClusterConn {
            conn,
            budget: config.response_timeout,
        });
        Ok(Self::with_conn(conn, config, true, None))
    }

    fn with_conn(
        conn: Conn,
        config: RedisConfig,
        cluster: bool,
        tracking: Option<Arc<Tracking>>,
    ) -> Self {
        let prefix = config.key_prefix.into_bytes();
        let buckets = redis_cluster::buckets(&prefix, cluster.then_some(config.cluster_buckets));
        let combine = config.combine_writes && !cluster && config.wait_for_replicas.is_none();
        RedisStore {
            inner: Arc::new(Inner {
                conn,
                buckets,
                prefix,
                apply: Script::new(APPLY_LUA),
                put: Script::new(PUT_LUA),
                prune: Script::new(PRUNE_LUA),
                count: Script::new(COUNT_LUA),
                response_timeout: config.response_timeout,
                wait_for_replicas: config.wait_for_replicas,
                tracking,
                combiner: combine.then(Arc::default),
                combine: Script::new(COMBINE_LUA),
            }),
        }
    }

    /// Tells `cache` (a [`CachedStore`](crate::stores::CachedStore) in front of this
    /// store) about every session key another client writes, as soon as Redis announces
    /// it: client-side caching in broadcast mode (`CLIENT TRACKING ON BCAST PREFIX ...`).
    /// This store's own writes stay cached: Redis announces writes made by a script to
    /// their own client as well (`NOLOOP` does not cover scripts), so the store expects one
    /// echo per write it sent and does not pass it on. Needs
    /// [`RedisConfig::client_tracking`]. One cache per store: a second call replaces the
    /// first.
    ///
    /// After a reconnect the cache is emptied and tracking turned on again (Redis forgets
    /// it with the connection); until then other writes are noticed through conflicts and
    /// the cache's staleness bound, as without tracking. A cache with
    /// `max_staleness(None)` then relies on invalidations alone for read-only accesses.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::stores::{CachedStore, RedisConfig, RedisStore};
    /// use std::time::Duration;
    ///
    /// let config = RedisConfig::new().key_prefix("pizza-bot:").client_tracking(true);
    /// let redis = RedisStore::connect_with("redis://127.0.0.1:6379", config).await?;
    /// let cached = CachedStore::new(redis.clone(), 100_000).max_staleness(Some(Duration::from_secs(5)));
    /// redis.track_for(&cached).await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
    pub async fn track_for(&self, cache: &crate::stores::CachedStore) -> Result<(), StoreError> {
        let Some(tracking) = &self.inner.tracking else {
            return Err(StoreError::backend(
                "redis: track_for needs RedisConfig::client_tracking(true) (and a single server)",
            ));
        };
        *tracking
            .target
            .lock()
            .map_err(|_| StoreError::backend("redis: tracking state poisoned"))? =
            Some(cache.invalidator());
        self.enable_tracking().await?;
        tracking
            .active
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // Anything cached before tracking was on may be stale already.
        cache.invalidator().invalidate_all();
        Ok(())
    }

    /// `CLIENT TRACKING ON BCAST PREFIX <prefix>s: NOLOOP` on the current connection.
    #[cfg(feature = "cache")]
    async fn enable_tracking(&self) -> Result<(), StoreError> {
        let mut conn = self.inner.conn.clone();
        redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("BCAST")
            .arg("PREFIX")
            .arg([self.inner.prefix.as_slice(), b"s:"].concat())
            .arg("NOLOOP")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.failure("client tracking", e))
    }

    /// The bucket of the session `key`.
    fn bucket_of(&self, key: &[u8]) -> usize {
        redis_cluster::bucket_of(key, self.inner.buckets.len())
    }

    /// The Redis key holding the session `key`.
    fn data_key(&self, key: &[u8]) -> Vec<u8> {
        self.inner.buckets[self.bucket_of(key)].data_key(&self.inner.prefix, key)
    }

    fn failure(&self, context: &'static str, source: RedisError) -> StoreError {
        if source.is_timeout() {
            StoreError::Timeout(self.inner.response_timeout)
        } else {
            StoreError::from_error(RedisFailure { context, source })
        }
    }

    /// A failed run of the apply script: not written, or its outcome unknown (see
    /// [`certainly_not_written`]). A timeout is [`StoreError::Timeout`] (unknown too).
    fn write_failure(&self, source: RedisError) -> StoreError {
        if source.is_timeout() {
            StoreError::Timeout(self.inner.response_timeout)
        } else if certainly_not_written(&source) {
            StoreError::from_error(RedisFailure {
                context: "write",
                source,
            })
        } else {
            StoreError::Unknown(Box::new(RedisFailure {
                context: "write (outcome unknown)",
                source,
            }))
        }
    }

    /// The positions of `keys` grouped by bucket, buckets in order of first appearance.
    fn by_bucket<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) -> Vec<(usize, Vec<usize>)> {
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for (i, key) in keys.enumerate() {
            let bucket = self.bucket_of(key);
            match groups.iter_mut().find(|(b, _)| *b == bucket) {
                Some((_, members)) => members.push(i),
                None => groups.push((bucket, vec![i])),
            }
        }
        groups
    }

    /// Reads several keys: one pipeline per bucket (a cluster pipeline stays in one slot),
    /// all sent at once, so one round trip on a single server.
    async fn hmget_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Record>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let groups = self.by_bucket(keys.iter().copied());
        let reads = groups.iter().map(|(_, members)| async move {
            let mut pipe = redis::pipe();
            for &i in members {
                pipe.cmd("HMGET")
                    .arg(self.data_key(keys[i]))
                    .arg("v")
                    .arg("r");
            }
            let mut conn = self.inner.conn.clone();
            let rows: Vec<(Option<Vec<u8>>, Option<String>)> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| self.failure("read", e))?;
            if rows.len() != members.len() {
                return Err(corrupt(format!(
                    "{} replies to {} reads",
                    rows.len(),
                    members.len()
                )));
            }
            Ok(rows)
        });
        let mut records = vec![None; keys.len()];
        for ((_, members), rows) in groups.iter().zip(join_all(reads).await) {
            for (&i, (value, revision)) in members.iter().zip(rows?) {
                records[i] = record(value, revision)?;
            }
        }
        Ok(records)
    }

    /// Whether the whole batch can go through [`PUT_LUA`]: compare-and-set puts only
    /// (on a revision, or on absence), of distinct keys, none at the largest revision.
    fn plain_puts(writes: &[&Write]) -> bool {
        writes.iter().enumerate().all(|(i, write)| {
            let cas = match write {
                Write::Put {
                    expect: Expect::Revision(expected),
                    ..
                } => *expected < u64::MAX,
                Write::Put {
                    expect: Expect::Absent,
                    ..
                } => true,
                _ => false,
            };
            cas && !writes[..i].iter().any(|w| w.key() == write.key())
        })
    }

    /// A write script's command up to its arguments: `eval` (`EVALSHA` or `EVAL`), the
    /// script (hash or source), the key count, then the bucket's counter and index and the
    /// data key of each of `writes` (the KEYS of [`APPLY_LUA`] and [`PUT_LUA`]).
    fn script_cmd(
        &self,
        eval: &str,
        script: &str,
        bucket: &Bucket,
        writes: &[&Write],
    ) -> redis::Cmd {
        script_keys(
            eval,
            script,
            bucket,
            writes.len(),
            writes
                .iter()
                .map(|write| bucket.data_key(&self.inner.prefix, write.key().as_bytes())),
        )
    }

    /// The command (`EVALSHA` with the hash, or `EVAL` with the source) running
    /// [`PUT_LUA`] on `writes` (see [`plain_puts`](Self::plain_puts)).
    fn put_cmd(&self, eval: &str, script: &str, bucket: &Bucket, writes: &[&Write]) -> redis::Cmd {
        let mut cmd = self.script_cmd(eval, script, bucket, writes);
        for write in writes {
            for arg in put_args(write).into_iter().flatten() {
                cmd.arg(&arg[..]);
            }
        }
        cmd
    }

    /// The apply script's command (`EVALSHA` with the hash, or `EVAL` with the source) on
    /// the writes of one bucket.
    fn apply_cmd(
        &self,
        eval: &str,
        script: &str,
        bucket: &Bucket,
        writes: &[&Write],
    ) -> redis::Cmd {
        let mut cmd = self.script_cmd(eval, script, bucket, writes);
        for (i, write) in writes.iter().enumerate() {
            // A compare-and-set put of a key the batch writes once updates the hash in
            // place (`U`): the key exists (its revision was checked), so it is listed
            // already and has no other fields; no `DEL`, no `ZADD`.
            let once = || {
                !writes
                    .iter()
                    .enumerate()
                    .any(|(j, w)| j != i && w.key() == write.key())
            };
            let (op, value, ttl, new): (&str, &[u8], u64, u64) = match write {
                Write::Put {
                    value,
                    ttl,
                    expect: Expect::Revision(expected),
                    ..
                } if once() && *expected < u64::MAX => ("U", value, ttl_millis(*ttl), expected + 1),
                Write::Put { value, ttl, .. } => ("P", value, ttl_millis(*ttl), 0),
                Write::Delete { .. } => ("D", b"", 0, 0),
            };
            let (expect, revision) = match write.expect() {
                Expect::Any => ("A", 0),
                Expect::Absent => ("N", 0),
                Expect::Revision(revision) => ("R", revision),
            };
            cmd.arg(op)
                .arg(expect)
                .arg(revision.to_string())
                .arg(new.to_string())
                .arg(value)
                .arg(ttl)
                .arg(write.key().as_bytes());
        }
        cmd
    }

    /// Sends the apply command, followed by `WAIT` when the store waits for replicas (in
    /// one pipeline, so on a cluster both go to the bucket's master). The script's answer,
    /// and `WAIT`'s if sent.
    async fn send_apply(
        &self,
        cmd: redis::Cmd,
    ) -> Result<(redis::Value, Option<Result<i64, RedisError>>), RedisError> {
        let mut conn = self.inner.conn.clone();
        let Some((replicas, timeout)) = self.inner.wait_for_replicas else {
            return Ok((cmd.query_async(&mut conn).await?, None));
        };
        let mut pipe = redis::pipe();
        pipe.add_command(cmd).cmd("WAIT").arg(replicas).arg(
            u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        let mut results: Vec<Result<redis::Value, RedisError>> =
            pipe.ignore_errors().query_async(&mut conn).await?;
        if results.len() != 2 {
            return Err(RedisError::from((
                ErrorKind::UnexpectedReturnType,
                "the write and WAIT pipeline did not answer twice",
            )));
        }
        let waited = results
            .pop()
            .expect("two results")
            .and_then(|v| redis::from_redis_value::<i64>(v).map_err(RedisError::from));
        let applied = results.pop().expect("two results")?;
        Ok((applied, Some(waited)))
    }

    /// Runs the apply script on the writes of one bucket; the revision of each write
    /// (0 for a delete) if applied, `None` on a failed precondition. An error is [`StoreError::Unknown`] or
    /// [`StoreError::Timeout`] when the write may have landed, a backend error when it
    /// certainly did not.
    async fn run_apply(
        &self,
        bucket: &Bucket,
        writes: &[&Write],
    ) -> Result<Option<Vec<u64>>, StoreError> {
        let tracking = self.inner.tracking.as_deref();
        let keys = || writes.iter().map(|w| w.key().as_bytes());
        if let Some(tracking) = tracking {
            tracking.expect_echoes(keys(), true);
        }
        let result = self.run_apply_untracked(bucket, writes).await;
        if let Some(tracking) = tracking {
            // No echo comes for a batch that certainly did not land.
            let landed_maybe = match &result {
                Ok(Some(_)) => true,
                Ok(None) => false,
                Err(error) => error.outcome_unknown(),
            };
            if !landed_maybe {
                tracking.expect_echoes(keys(), false);
            }
        }
        result
    }

    /// [`run_apply`](Self::run_apply) without the tracking bookkeeping.
    async fn run_apply_untracked(
        &self,
        bucket: &Bucket,
        writes: &[&Write],
    ) -> Result<Option<Vec<u64>>, StoreError> {
        // The lazy runtime's usual writes go through the cheaper script.
        let plain = Self::plain_puts(writes);
        if let (true, Some(combiner)) = (plain, &self.inner.combiner) {
            return self.apply_combined(combiner, bucket, writes).await;
        }
        let command = |eval: &str, by_hash: bool| {
            if plain {
                let script = if by_hash {
                    self.inner.put.get_hash()
                } else {
                    PUT_LUA
                };
                self.put_cmd(eval, script, bucket, writes)
            } else {
                let script = if by_hash {
                    self.inner.apply.get_hash()
                } else {
                    APPLY_LUA
                };
                self.apply_cmd(eval, script, bucket, writes)
            }
        };
        let sent = match self.send_apply(command("EVALSHA", true)).await {
            // The server does not know the script (it restarted, or a failover promoted
            // a replica that never ran it): nothing ran. `EVAL` sends the source along,
            // which also caches it there.
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.send_apply(command("EVAL", false)).await
            }
            sent => sent,
        };
        let (reply, waited) = sent.map_err(|e| self.write_failure(e))?;
        let revisions = parse_apply_reply(reply, writes.len())?;
        if let (Some(_), Some(waited), Some((replicas, timeout))) =
            (&revisions, waited, self.inner.wait_for_replicas)
        {
            match waited {
                Ok(acked) if usize::try_from(acked).is_ok_and(|a| a >= replicas) => {}
                Ok(acked) => {
                    return Err(StoreError::unknown(format!(
                        "redis write: applied on the master, but {acked} of {replicas} \
                         replicas confirmed it within {timeout:?}: it may be lost on failover"
                    )));
                }
                Err(error) => {
                    return Err(StoreError::unknown(format!(
                        "redis write: applied on the master, but WAIT for {replicas} \
                         replicas failed ({error}): it may be lost on failover"
                    )));
                }
            }
        }
        Ok(revisions)
    }

    /// Runs plain compare-and-set puts (see [`plain_puts`](Self::plain_puts)) as one
    /// commit of a combined call ([`RedisConfig::combine_writes`]); the same answers and
    /// errors as [`PUT_LUA`] alone.
    async fn apply_combined(
        &self,
        combiner: &Arc<Combiner>,
        bucket: &Bucket,
        writes: &[&Write],
    ) -> Result<Option<Vec<u64>>, StoreError> {
        let args = writes
            .iter()
            .flat_map(|write| put_args(write).into_iter().flatten())
            .map(std::borrow::Cow::into_owned)
            .collect();
        let commit = redis_combine::Commit {
            keys: writes
                .iter()
                .map(|write| bucket.data_key(&self.inner.prefix, write.key().as_bytes()))
                .collect(),
            args,
        };
        let store = self.clone();
        let call: redis_combine::Call = Arc::new(move |commits| {
            let store = store.clone();
            Box::pin(async move { store.send_combined(commits).await })
        });
        match combiner.submit(commit, &call).await {
            // This commit's own error, raised before any of its writes: not written.
            redis_combine::Outcome::Answered(Ok(redis::Value::Array(items)))
                if items.first() == Some(&redis::Value::Int(2)) =>
            {
                let message = match items.get(1) {
                    Some(redis::Value::BulkString(bytes)) => {
                        String::from_utf8_lossy(bytes).into_owned()
                    }
                    other => format!("{other:?}"),
                };
                Err(self.write_failure(RedisError::from((
                    ErrorKind::Server(ServerErrorKind::ResponseError),
                    "the write script refused it",
                    message,
                ))))
            }
            redis_combine::Outcome::Answered(Ok(answer)) => parse_apply_reply(answer, writes.len()),
            redis_combine::Outcome::Answered(Err(error)) => Err(self.write_failure(error)),
            redis_combine::Outcome::Abandoned => Err(StoreError::unknown(
                "redis write: the combined call carrying it was abandoned (its runtime shut \
                 down): it may or may not have been applied",
            )),
        }
    }

    /// One combined call of `commits` ([`COMBINE_LUA`]; by hash, or with the source when
    /// the server does not know it). Single servers only: one bucket.
    async fn send_combined(
        &self,
        commits: Vec<redis_combine::Commit>,
    ) -> Result<redis::Value, RedisError> {
        let bucket = &self.inner.buckets[0];
        let command = |eval: &str, script: &str| {
            let count = commits.iter().map(|commit| commit.keys.len()).sum();
            let keys = commits.iter().flat_map(|commit| &commit.keys);
            let mut cmd = script_keys(eval, script, bucket, count, keys);
            cmd.arg(commits.len());
            for commit in &commits {
                cmd.arg(commit.keys.len());
                for arg in &commit.args {
                    cmd.arg(arg);
                }
            }
            cmd
        };
        let mut conn = self.inner.conn.clone();
        match command("EVALSHA", self.inner.combine.get_hash())
            .query_async(&mut conn)
            .await
        {
            // Nothing ran; `EVAL` sends the source along (see `run_apply_untracked`).
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                command("EVAL", COMBINE_LUA).query_async(&mut conn).await
            }
            sent => sent,
        }
    }

    /// Removes from the listing index of `bucket` the keys among `keys` (all of that
    /// bucket) whose session is gone.
    async fn prune(&self, bucket: &Bucket, keys: &[&[u8]]) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut invocation = self.inner.prune.prepare_invoke();
        invocation.key(&bucket.index);
        for key in keys {
            invocation.key(bucket.data_key(&self.inner.prefix, key));
        }
        for key in keys {
            invocation.arg(*key);
        }
        let mut conn = self.inner.conn.clone();
        invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failure("prune index", e))
    }

    /// Prunes `keys` (of any buckets), each bucket's part at once.
    async fn prune_all(&self, keys: &[&[u8]]) -> Result<u64, StoreError> {
        let groups = self.by_bucket(keys.iter().copied());
        let prunes = groups.iter().map(|(bucket, members)| {
            let keys: Vec<&[u8]> = members.iter().map(|&i| keys[i]).collect();
            async move { self.prune(&self.inner.buckets[*bucket], &keys).await }
        });
        let mut removed = 0;
        for result in join_all(prunes).await {
            removed += result?;
        }
        Ok(removed)
    }

    /// One page of a bucket's index entries from `start` (exclusive if `after`) below
    /// `end`.
    async fn index_page(
        &self,
        bucket: &Bucket,
        start: &[u8],
        after: bool,
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let min = [if after { b"(" } else { b"[" }, start].concat();
        let max = match end {
            Some(end) => [b"(".as_slice(), end].concat(),
            None => b"+".to_vec(),
        };
        let mut conn = self.inner.conn.clone();
        redis::cmd("ZRANGEBYLEX")
            .arg(&bucket.index)
            .arg(min)
            .arg(max)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.failure("list", e))
    }

    /// Up to `limit` index entries from `start` (exclusive if `after`) below `end`, in key
    /// order, merged over every bucket.
    ///
    /// Each round reads a few entries from every bucket at once. Every entry up to the
    /// smallest last entry of a bucket that answered in full (the bound) is then known,
    /// so those are emitted in order; the next round starts after the bound. With one
    /// bucket this is one `ZRANGEBYLEX` of `limit`.
    async fn merged_index_page(
        &self,
        start: &[u8],
        after: bool,
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let buckets = &self.inner.buckets;
        let mut keys: Vec<Vec<u8>> = Vec::with_capacity(limit);
        let (mut start, mut after) = (start.to_vec(), after);
        while keys.len() < limit {
            let need = limit - keys.len();
            // Keys spread evenly over buckets: twice an even share each and a few, so the
            // bound lands past `need` keys in one round nearly always.
            let each = if buckets.len() == 1 {
                need
            } else {
                2 * need.div_ceil(buckets.len()) + 8
            };
            let pages = join_all(
                buckets
                    .iter()
                    .map(|bucket| self.index_page(bucket, &start, after, end, each)),
            )
            .await;
            let mut round = Vec::new();
            let mut bound: Option<Vec<u8>> = None;
            for page in pages {
                let page = page?;
                if page.len() >= each {
                    let last = page.last().expect("a full page").clone();
                    if bound.as_ref().is_none_or(|b| last < *b) {
                        bound = Some(last);
                    }
                }
                round.extend(page);
            }
            if let Some(bound) = &bound {
                round.retain(|key| key <= bound);
            }
            round.sort_unstable();
            round.truncate(need);
            keys.extend(round);
            match bound {
                Some(bound) => (start, after) = (bound, true),
                None => break,
            }
        }
        Ok(keys)
    }

    /// Drops the listing-index entries of sessions that expired; returns how many. Reads
    /// never see expired sessions (Redis removes them by itself): this only keeps the
    /// index from growing when TTLs are used and nothing lists. Safe to run while the
    /// bot runs, from any number of processes.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::store::StoreError> {
    /// use multisession::stores::RedisStore;
    /// use std::time::Duration;
    ///
    /// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
    /// // Beside the bot: once an hour, on the same runtime.
    /// let sweeper = store.clone();
    /// tokio::spawn(async move {
    ///     let mut hourly = tokio::time::interval(Duration::from_secs(3600));
    ///     loop {
    ///         hourly.tick().await;
    ///         match sweeper.sweep_expired().await {
    ///             Ok(removed) => println!("dropped {removed} expired index entries"),
    ///             Err(error) => eprintln!("sweep failed: {error}"),
    ///         }
    ///     }
    /// });
    /// # Ok(()) }
    /// ```
    pub async fn sweep_expired(&self) -> Result<u64, StoreError> {
        let mut removed = 0;
        for bucket in &self.inner.buckets {
            let mut start: Vec<u8> = Vec::new();
            let mut after = false;
            loop {
                let page = self.index_page(bucket, &start, after, None, 500).await?;
                let keys: Vec<&[u8]> = page.iter().map(Vec::as_slice).collect();
                removed += self.prune(bucket, &keys).await?;
                match page.last() {
                    Some(last) if page.len() == 500 => {
                        start = last.clone();
                        after = true;
                    }
                    _ => break,
                }
            }
        }
        Ok(removed)
    }

    /// The live sessions under `prefix` in one bucket, a chunk per script call.
    async fn count_bucket(&self, bucket: &Bucket, prefix: &[u8]) -> Result<u64, StoreError> {
        let max = match prefix_end(prefix) {
            Some(end) => [b"(".as_slice(), &end].concat(),
            None => b"+".to_vec(),
        };
        let data_start = bucket.data_key(&self.inner.prefix, b"");
        let mut min = [b"[".as_slice(), prefix].concat();
        let mut total = 0u64;
        loop {
            let mut invocation = self.inner.count.prepare_invoke();
            invocation
                .key(&bucket.index)
                .arg(&min)
                .arg(&max)
                .arg(&data_start)
                .arg(COUNT_CHUNK);
            let mut conn = self.inner.conn.clone();
            let reply: (u64, Option<Vec<u8>>) = invocation
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.failure("count", e))?;
            total += reply.0;
            match reply.1 {
                Some(last) => min = [b"(".as_slice(), &last].concat(),
                None => return Ok(total),
            }
        }
    }

    /// Applies the writes of one bucket: the outcome of every write, with the revision of
    /// each applied put.
    async fn apply_bucket(
        &self,
        bucket: &Bucket,
        writes: &[&Write],
    ) -> Vec<Result<(Outcome, Option<u64>), StoreError>> {
        match self.run_apply(bucket, writes).await {
            Ok(Some(revisions)) => writes
                .iter()
                .zip(revisions)
                .map(|(write, revision)| {
                    let put = matches!(write, Write::Put { .. });
                    Ok((Outcome::Applied, put.then_some(revision)))
                })
                .collect(),
            Ok(None) => writes
                .iter()
                .map(|_| Ok((Outcome::Conflict, None)))
                .collect(),
            Err(error) => writes.iter().map(|_| Err(error.replicate())).collect(),
        }
    }

    /// Every write's outcome and revision, each bucket's part at once.
    async fn apply_all(&self, writes: &[Write]) -> Vec<Result<(Outcome, Option<u64>), StoreError>> {
        if writes.is_empty() {
            return Vec::new();
        }
        let buckets = &self.inner.buckets;
        if buckets.len() == 1 {
            let writes: Vec<&Write> = writes.iter().collect();
            return self.apply_bucket(&buckets[0], &writes).await;
        }
        // One script per bucket, all at once; each part atomic on its own.
        let groups = self.by_bucket(writes.iter().map(|w| w.key().as_bytes()));
        let parts = groups.iter().map(|(bucket, members)| {
            let part: Vec<&Write> = members.iter().map(|&i| &writes[i]).collect();
            async move { self.apply_bucket(&buckets[*bucket], &part).await }
        });
        type Revised = Result<(Outcome, Option<u64>), StoreError>;
        let mut results: Vec<Option<Revised>> =
            std::iter::repeat_with(|| None).take(writes.len()).collect();
        for ((_, members), outcomes) in groups.iter().zip(join_all(parts).await) {
            for (&i, outcome) in members.iter().zip(outcomes) {
                results[i] = Some(outcome);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(corrupt("a write of the batch got no outcome"))))
            .collect()
    }

    /// One unconditional write or delete.
    async fn apply_one(&self, write: Write, what: &str) -> Result<(), StoreError> {
        let bucket = &self.inner.buckets[self.bucket_of(write.key().as_bytes())];
        match self.run_apply(bucket, &[&write]).await? {
            Some(_) => Ok(()),
            None => Err(corrupt(format!(
                "an unconditional {what} reported a conflict"
            ))),
        }
    }
}

#[async_trait]
impl Store for RedisStore {
    fn name(&self) -> &str {
        "redis"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // A batch over several buckets is split per bucket (see `connect_cluster`).
            atomic_batch: self.inner.buckets.len() == 1,
            ..Capabilities::FULL
        }
    }

    fn instance(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let mut conn = self.inner.conn.clone();
        let (value, revision): (Option<Vec<u8>>, Option<String>) = redis::cmd("HMGET")
            .arg(self.data_key(key.as_bytes()))
            .arg("v")
            .arg("r")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.failure("read", e))?;
        record(value, revision)
    }

    async fn read_many(&self, keys: &[&str]) -> Result<Vec<Option<Record>>, StoreError> {
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        self.hmget_many(&keys).await
    }

    async fn read_with_ttl(
        &self,
        key: &str,
    ) -> Result<Option<(Record, Option<Duration>)>, StoreError> {
        // `MULTI`/`EXEC`: the value and its TTL from one moment.
        let data_key = self.data_key(key.as_bytes());
        let mut conn = self.inner.conn.clone();
        let ((value, revision), pttl): ((Option<Vec<u8>>, Option<String>), i64) = redis::pipe()
            .atomic()
            .cmd("HMGET")
            .arg(&data_key)
            .arg("v")
            .arg("r")
            .cmd("PTTL")
            .arg(&data_key)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.failure("read", e))?;
        // PTTL: -1 for a key without expiry, -2 for a missing one.
        let ttl = u64::try_from(pttl).ok().map(Duration::from_millis);
        Ok(record(value, revision)?.map(|record| (record, ttl)))
    }

    async fn write(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let write = Write::Put {
            key: key.to_owned(),
            value: value.to_vec(),
            ttl,
            expect: Expect::Any,
        };
        self.apply_one(write, "write").await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let write = Write::Delete {
            key: key.to_owned(),
            expect: Expect::Any,
        };
        self.apply_one(write, "delete").await
    }

    async fn apply(&self, writes: &[Write]) -> Vec<Result<Outcome, StoreError>> {
        crate::store::without_revisions(self.apply_all(writes).await)
    }

    async fn apply_with_revisions(
        &self,
        writes: &[Write],
    ) -> Vec<Result<(Outcome, Option<u64>), StoreError>> {
        self.apply_all(writes).await
    }

    /// Counts in the server: each bucket's index entries under `prefix` whose session
    /// still exists, in chunks of 5000 per script call, every bucket at once.
    async fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        let counts = join_all(
            self.inner
                .buckets
                .iter()
                .map(|bucket| self.count_bucket(bucket, prefix.as_bytes())),
        )
        .await;
        counts.into_iter().sum()
    }

    async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let limit = limit.max(1);
        let prefix = prefix.as_bytes();
        let (start, after) = match cursor {
            Some(cursor) if cursor.as_bytes() >= prefix => (cursor.as_bytes(), true),
            _ => (prefix, false),
        };
        let end = prefix_end(prefix);
        let keys = self
            .merged_index_page(start, after, end.as_deref(), limit)
            .await?;
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let records = self.hmget_many(&refs).await?;
        let mut entries = Vec::with_capacity(keys.len());
        let mut gone = Vec::new();
        for (key, record) in keys.iter().zip(records) {
            match record {
                Some(record) => {
                    let key = String::from_utf8(key.clone())
                        .map_err(|_| corrupt("a listed key is not UTF-8"))?;
                    entries.push((key, record));
                }
                None => gone.push(key.clone()),
            }
        }
        // Expired sessions leave their index entry behind; drop it while we are here.
        // A failure to do so does not fail the listing.
        let gone: Vec<&[u8]> = gone.iter().map(Vec::as_slice).collect();
        if let Err(error) = self.prune_all(&gone).await {
            tracing::debug!(%error, "redis: could not prune expired index entries");
        }
        let cursor = match keys.last() {
            Some(last) if keys.len() == limit => Some(
                String::from_utf8(last.clone())
                    .map_err(|_| corrupt("a listed key is not UTF-8"))?,
            ),
            _ => None,
        };
        Ok(Page { entries, cursor })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_a_millisecond() {
        assert_eq!(ttl_millis(None), 0);
        assert_eq!(ttl_millis(Some(Duration::from_micros(10))), 1);
        assert_eq!(ttl_millis(Some(Duration::from_secs(2))), 2000);
        // Capped, so `PEXPIRE` never fails on it halfway through a batch.
        assert_eq!(ttl_millis(Some(Duration::MAX)), MAX_TTL_MS);
        assert_eq!(
            ttl_millis(Some(Duration::from_secs(u64::MAX / 1000))),
            MAX_TTL_MS
        );
    }

    #[test]
    fn failed_writes_are_unknown_unless_certainly_not_sent() {
        use std::io::{Error, ErrorKind as Io};
        let io = |kind| RedisError::from(Error::from(kind));
        assert!(certainly_not_written(&io(Io::ConnectionRefused)));
        for kind in [
            Io::BrokenPipe,
            Io::ConnectionReset,
            Io::ConnectionAborted,
            Io::UnexpectedEof,
            Io::Other,
        ] {
            assert!(!certainly_not_written(&io(kind)), "{kind:?}");
        }
        let general = |kind| RedisError::from((kind, "test"));
        assert!(certainly_not_written(&general(
            ErrorKind::AuthenticationFailed
        )));
        assert!(certainly_not_written(&general(ErrorKind::Client)));
        assert!(!certainly_not_written(&general(ErrorKind::Parse)));
        assert!(!certainly_not_written(&general(ErrorKind::Io)));
        assert!(!certainly_not_written(&general(
            ErrorKind::UnexpectedReturnType
        )));
    }

    #[test]
    fn half_written_hashes_are_corrupt_not_missing() {
        assert!(record(None, None).unwrap().is_none());
        assert!(matches!(
            record(Some(b"x".to_vec()), None),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            record(Some(b"x".to_vec()), Some("x1".into())),
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(
            record(Some(b"x".to_vec()), Some("7".into())).unwrap(),
            Some(Record::new(b"x".to_vec(), 7))
        );
    }
}
