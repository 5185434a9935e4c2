//! What a stored value carries besides the codec's bytes: the updates that changed it
//! (rule S25, exactly once per update).
//!
//! A value written by this runtime is stored as
//!
//! ```text
//! b"\0MSu" | count: u8 | count × varint (zigzag delta from the previous id) | payload
//! ```
//!
//! where the ids are those of the most recent updates that changed the value, oldest
//! first, and `payload` is what the codec wrote (with the migration version header, if the
//! fragment has migrations). Values without the header (stored by the first release, or
//! by hand) have no recorded updates: they are read as they are, no migration step.
//!
//! When an update is delivered again, re-run after a conflict, or retried after a partial
//! or unknown commit, a fragment whose stored value already lists the update's id is not
//! written again: each fragment changes at most once per update.

/// The header of a stored value that lists the updates that changed it. No JSON text and
/// no version header (`\0MSv`) starts with it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, MultiSession, envelope::UPDATES_MAGIC, store::Store, stores::MemoryStore};
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
/// }
///
/// let store = MemoryStore::new();
/// let sessions = Bot::builder().default_store(store.clone()).build();
/// sessions.run(&ChatContext::new(1), async |s| s.count().set(1).await).await?;
/// let stored = store.read("count:1").await.unwrap().unwrap().value;
/// assert!(stored.starts_with(UPDATES_MAGIC));
/// assert!(!br#"{"count":1}"#.starts_with(UPDATES_MAGIC));
/// # Ok(()) }
/// ```
pub const UPDATES_MAGIC: &[u8; 4] = b"\0MSu";

/// How many update ids a stored value remembers by default (see
/// [`Config::remember_updates`](crate::Config::remember_updates)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, MultiSession, envelope, store::Store, stores::MemoryStore};
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
/// }
///
/// let store = MemoryStore::new();
/// let sessions = Bot::builder().default_store(store.clone()).build();
/// for id in 1..=40 {
///     let update = ChatContext::new(1).with_update_id(id);
///     sessions.run(&update, async |s| { *s.count().await? += 1; Ok::<_, multisession::Error>(()) }).await?;
/// }
/// let stored = store.read("count:1").await.unwrap().unwrap().value;
/// let (updates, _) = envelope::split(&stored);
/// assert_eq!(updates.len(), envelope::DEFAULT_REMEMBERED);
/// assert_eq!(updates.iter().next(), Some(9), "the oldest ones were dropped");
/// # Ok(()) }
/// ```
pub const DEFAULT_REMEMBERED: usize = 32;

/// The recorded updates and the codec's payload of stored bytes. Bytes without the header
/// (or with a damaged one) are all payload, with no recorded updates.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, MultiSession, envelope, store::Store, stores::MemoryStore};
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
/// }
///
/// let store = MemoryStore::new();
/// let sessions = Bot::builder().default_store(store.clone()).build();
/// let update = ChatContext::new(1).with_update_id(584_120_332);
/// sessions.run(&update, async |s| s.count().set(5).await).await?;
///
/// let stored = store.read("count:1").await.unwrap().unwrap().value;
/// let (updates, payload) = envelope::split(&stored);
/// assert_eq!(updates.iter().collect::<Vec<_>>(), [584_120_332]);
/// assert_eq!(payload, b"5", "what the JSON codec wrote");
///
/// // Bytes without the header (stored by hand, or by the first release).
/// let (updates, payload) = envelope::split(b"5");
/// assert!(updates.is_empty());
/// assert_eq!(payload, b"5");
/// # Ok(()) }
/// ```
pub fn split(bytes: &[u8]) -> (Updates<'_>, &[u8]) {
    let Some(rest) = bytes.strip_prefix(&UPDATES_MAGIC[..]) else {
        return (Updates::NONE, bytes);
    };
    let Some((&count, mut cursor)) = rest.split_first() else {
        return (Updates::NONE, bytes);
    };
    let start = cursor;
    for _ in 0..count {
        match read_varint(cursor) {
            Some((_, next)) => cursor = next,
            None => return (Updates::NONE, bytes),
        }
    }
    let ids_len = start.len() - cursor.len();
    (
        Updates {
            count,
            encoded: &start[..ids_len],
        },
        cursor,
    )
}

/// The codec's payload of stored bytes (without the recorded updates).
///
/// ```
/// use multisession::envelope::{join, payload, split};
///
/// let stored = join(split(b"").0, 7, 32, br#"{"lang":"de"}"#);
/// assert_eq!(payload(&stored), br#"{"lang":"de"}"#);
/// assert_eq!(payload(b"42"), b"42", "no header: all payload");
/// ```
pub fn payload(bytes: &[u8]) -> &[u8] {
    split(bytes).1
}

/// The update ids recorded in a stored value, oldest first.
///
/// ```
/// use multisession::envelope::{Updates, join, split};
///
/// let first = join(split(b"").0, 100, 32, b"1");
/// let second = join(split(&first).0, 101, 32, b"2");
/// let (updates, payload): (Updates<'_>, &[u8]) = split(&second);
/// assert_eq!(payload, b"2");
/// assert_eq!(updates.iter().collect::<Vec<_>>(), [100, 101]);
/// assert!(updates.contains(100) && !updates.contains(102));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Updates<'a> {
    count: u8,
    encoded: &'a [u8],
}

impl<'a> Updates<'a> {
    const NONE: Updates<'static> = Updates {
        count: 0,
        encoded: &[],
    };

    /// The ids, oldest first.
    ///
    /// ```
    /// use multisession::envelope::{join, split};
    ///
    /// let mut stored = b"0".to_vec();
    /// for id in [584_120_332, 584_120_335, 584_120_333] {
    ///     stored = join(split(&stored).0, id, 32, b"0");
    /// }
    /// let ids: Vec<u64> = split(&stored).0.iter().collect();
    /// assert_eq!(ids, [584_120_332, 584_120_335, 584_120_333], "in the order they changed it");
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = u64> + 'a {
        let mut cursor = self.encoded;
        let mut previous = 0u64;
        (0..self.count).map_while(move |_| {
            let (delta, next) = read_varint(cursor)?;
            cursor = next;
            previous = previous.wrapping_add(unzigzag(delta) as u64);
            Some(previous)
        })
    }

    /// Whether update `id` is among them.
    ///
    /// ```
    /// use multisession::envelope::{join, split};
    ///
    /// let stored = join(split(b"1").0, 584_120_332, 32, b"2");
    /// let (updates, _) = split(&stored);
    /// assert!(updates.contains(584_120_332), "delivered again: already applied");
    /// assert!(!updates.contains(584_120_333));
    /// ```
    pub fn contains(&self, id: u64) -> bool {
        self.iter().any(|seen| seen == id)
    }

    /// How many there are.
    ///
    /// ```
    /// use multisession::envelope::{join, split};
    ///
    /// let mut stored = Vec::new();
    /// for id in 1..=5 {
    ///     stored = join(split(&stored).0, id, 3, b"x"); // remember 3
    /// }
    /// assert_eq!(split(&stored).0.len(), 3);
    /// assert_eq!(split(b"x").0.len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether there are none.
    ///
    /// ```
    /// use multisession::envelope::{join, split};
    ///
    /// assert!(split(b"{}").0.is_empty(), "a value stored without the header");
    /// assert!(!split(&join(split(b"{}").0, 1, 32, b"{}")).0.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// How many generated update ids (those of contexts without an id of their own) a value
/// keeps: they only need to outlive the re-runs of their own `run` call, and each costs
/// up to ten bytes.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), multisession::Error> {
/// use multisession::{ChatContext, MultiSession, envelope, store::Store, stores::MemoryStore};
///
/// #[derive(MultiSession)]
/// struct Bot {
///     count: u32,
/// }
///
/// let store = MemoryStore::new();
/// let sessions = Bot::builder().default_store(store.clone()).build();
/// for _ in 0..12 {
///     // A context without an update id: each `run` generates one.
///     sessions.run(&ChatContext::new(1), async |s| { *s.count().await? += 1; Ok::<_, multisession::Error>(()) }).await?;
/// }
/// let stored = store.read("count:1").await.unwrap().unwrap().value;
/// assert_eq!(envelope::split(&stored).0.len(), envelope::GENERATED_REMEMBERED);
/// # Ok(()) }
/// ```
pub const GENERATED_REMEMBERED: usize = 8;

/// The bit set in generated update ids.
const GENERATED: u64 = 1 << 63;

/// The stored bytes of `payload` first changed by update `id` (no earlier record).
#[cfg(test)]
pub(crate) fn first(id: u64, payload: &[u8]) -> Vec<u8> {
    join(Updates::NONE, id, 1, payload)
}

/// Appends the header of a value first changed by update `id` (no earlier record) to
/// `out`; the payload follows.
pub(crate) fn first_header(out: &mut Vec<u8>, id: u64) {
    out.extend_from_slice(UPDATES_MAGIC);
    out.push(1);
    write_varint(out, zigzag(id as i64));
}

/// What one pass over a stored value's updates found, for [`rejoin`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    /// The update asked about is among them.
    pub(crate) applied: bool,
    count: usize,
    last: u64,
    generated: usize,
    /// The first (oldest) id is a generated one.
    first_generated: bool,
    /// The second id, and where the third starts (in the encoded ids).
    second: Option<(u64, usize)>,
}

/// [`split`] and [`Updates::scan`] of stored bytes in one pass: what [`rejoin`] needs,
/// and where the payload starts.
pub(crate) fn scan_stored(bytes: &[u8], id: u64) -> (Scan, usize) {
    let plain = (Scan::default(), 0);
    let Some(rest) = bytes.strip_prefix(&UPDATES_MAGIC[..]) else {
        return plain;
    };
    let Some((&count, encoded)) = rest.split_first() else {
        return plain;
    };
    let mut scan = Scan {
        count: usize::from(count),
        ..Scan::default()
    };
    let mut cursor = encoded;
    let mut previous = 0u64;
    for at in 0..count {
        let Some((delta, next)) = read_varint(cursor) else {
            return plain;
        };
        cursor = next;
        previous = previous.wrapping_add(unzigzag(delta) as u64);
        scan.applied |= previous == id;
        scan.generated += usize::from(previous & GENERATED != 0);
        if at == 0 {
            scan.first_generated = previous & GENERATED != 0;
        } else if at == 1 {
            scan.second = Some((previous, encoded.len() - cursor.len()));
        }
    }
    scan.last = previous;
    (scan, bytes.len() - cursor.len())
}

#[cfg(test)]
impl Updates<'_> {
    /// One pass: whether `id` is among them, and what [`rejoin`] needs.
    pub(crate) fn scan(&self, id: u64) -> Scan {
        let mut scan = Scan {
            count: self.len(),
            ..Scan::default()
        };
        let mut cursor = self.encoded;
        let mut previous = 0u64;
        for at in 0..self.count {
            let Some((delta, next)) = read_varint(cursor) else {
                break;
            };
            cursor = next;
            previous = previous.wrapping_add(unzigzag(delta) as u64);
            scan.applied |= previous == id;
            scan.generated += usize::from(previous & GENERATED != 0);
            if at == 0 {
                scan.first_generated = previous & GENERATED != 0;
            } else if at == 1 {
                scan.second = Some((previous, self.encoded.len() - cursor.len()));
            }
        }
        scan.last = previous;
        scan
    }
}

/// [`join`] for a stored value already scanned: `stored` is the whole stored value, its
/// payload starting at `payload_at`. Appending an id (or dropping the oldest for it)
/// copies the other encoded ids as they are.
#[cfg(test)]
pub(crate) fn rejoin(
    stored: &[u8],
    payload_at: usize,
    scan: &Scan,
    id: u64,
    keep: usize,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    if !rejoin_header(&mut out, stored, payload_at, scan, id, keep) {
        return join(split(stored).0, id, keep, payload);
    }
    out.extend_from_slice(payload);
    out
}

/// Appends the header [`join`] would give a stored value already scanned (`stored`, its
/// payload at `payload_at`) changed by update `id` to `out`, copying the encoded ids it
/// keeps as they are; `false` (and `out` unchanged) where that takes [`join`] itself
/// (the update is among them already, a damaged header, more than one id to drop).
pub(crate) fn rejoin_header(
    out: &mut Vec<u8>,
    stored: &[u8],
    payload_at: usize,
    scan: &Scan,
    id: u64,
    keep: usize,
) -> bool {
    let keep = keep.clamp(1, usize::from(u8::MAX));
    let generated = scan.generated + usize::from(id & GENERATED != 0);
    // One generated id too many (an update without an id of its own, after several
    // others): `join` drops the oldest generated one, which is the first id if that one
    // is generated — the same bytes as dropping the oldest for room.
    let generated_over = generated > GENERATED_REMEMBERED;
    let fits = !scan.applied
        && (!generated_over || (generated == GENERATED_REMEMBERED + 1 && scan.first_generated))
        && scan.count <= keep
        && payload_at > UPDATES_MAGIC.len()
        || scan.count == 0;
    if !fits {
        return false;
    }
    let encoded = if scan.count == 0 {
        &[][..]
    } else {
        &stored[UPDATES_MAGIC.len() + 1..payload_at]
    };
    out.reserve(UPDATES_MAGIC.len() + 12 + encoded.len());
    out.extend_from_slice(UPDATES_MAGIC);
    if scan.count < keep && !generated_over {
        out.push((scan.count + 1) as u8);
        out.extend_from_slice(encoded);
        write_varint(out, zigzag(id.wrapping_sub(scan.last) as i64));
    } else {
        // Full (or one generated id too many): the oldest goes, the second becomes the
        // first (an absolute value).
        out.push(scan.count as u8);
        match scan.second {
            Some((second, rest)) => {
                write_varint(out, zigzag(second as i64));
                out.extend_from_slice(&encoded[rest..]);
                write_varint(out, zigzag(id.wrapping_sub(scan.last) as i64));
            }
            None => write_varint(out, zigzag(id as i64)),
        }
    }
    true
}

/// The stored bytes of `payload` changed by update `id`, after the updates `previous`:
/// the newest ids, at most `keep` in all, of which at most [`GENERATED_REMEMBERED`]
/// generated ones.
///
/// ```
/// use multisession::envelope::{join, split};
///
/// // Update 7 changes a value that updates 5 and 6 changed before.
/// let before = join(split(b"1").0, 5, 32, b"1");
/// let before = join(split(&before).0, 6, 32, b"2");
/// let (previous, _) = split(&before);
/// let after = join(previous, 7, 32, b"3");
/// let (updates, payload) = split(&after);
/// assert_eq!((updates.iter().collect::<Vec<_>>(), payload), (vec![5, 6, 7], &b"3"[..]));
///
/// // At most `keep` ids: the oldest go. An id already there moves to the end, once.
/// let kept = join(updates, 5, 2, b"4");
/// assert_eq!(split(&kept).0.iter().collect::<Vec<_>>(), [7, 5]);
/// ```
pub fn join(previous: Updates<'_>, id: u64, keep: usize, payload: &[u8]) -> Vec<u8> {
    let keep = keep.clamp(1, usize::from(u8::MAX));
    // The earlier ids, oldest first; kept: the newest `keep - 1` of them, of which at most
    // `GENERATED_REMEMBERED - 1` generated ones (when `id` is generated too).
    let mut ids: Vec<u64> = Vec::with_capacity(previous.len() + 1);
    ids.extend(previous.iter().filter(|&seen| seen != id));
    let generated_allowed = GENERATED_REMEMBERED - usize::from(id & GENERATED != 0);
    let generated = ids.iter().filter(|&&seen| seen & GENERATED != 0).count();
    if generated <= generated_allowed {
        // The common case: only the count bounds what is kept.
        let skip = (ids.len() + 1).saturating_sub(keep);
        ids.drain(..skip);
    } else {
        let mut kept = Vec::with_capacity(keep);
        let mut generated = 0;
        for &seen in ids.iter().rev() {
            if kept.len() + 1 == keep {
                break;
            }
            if seen & GENERATED != 0 {
                if generated == generated_allowed {
                    continue;
                }
                generated += 1;
            }
            kept.push(seen);
        }
        kept.reverse();
        ids = kept;
    }
    ids.push(id);
    let count = ids.len();
    let mut out = Vec::with_capacity(UPDATES_MAGIC.len() + 1 + count * 3 + payload.len());
    out.extend_from_slice(UPDATES_MAGIC);
    out.push(count as u8);
    let mut last = 0u64;
    for id in ids {
        write_varint(&mut out, zigzag(id.wrapping_sub(last) as i64));
        last = id;
    }
    out.extend_from_slice(payload);
    out
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

fn write_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

#[inline]
fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    // Ids recorded after the first are small deltas: one or two bytes.
    match *bytes {
        [low, ref rest @ ..] if low & 0x80 == 0 => return Some((u64::from(low), rest)),
        [low, high, ref rest @ ..] if high & 0x80 == 0 => {
            return Some((u64::from(low & 0x7f) | u64::from(high) << 7, rest));
        }
        _ => {}
    }
    let mut n = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        n |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((n, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bytes_have_no_updates() {
        let (updates, payload) = split(b"{\"a\":1}");
        assert!(updates.is_empty());
        assert_eq!(payload, b"{\"a\":1}");
        // A damaged header is payload too, never a panic.
        let (updates, payload) = split(b"\0MSu\x05\xff");
        assert!(updates.is_empty());
        assert_eq!(payload, b"\0MSu\x05\xff");
        assert_eq!(split(b"\0MSu").1, b"\0MSu");
    }

    #[test]
    fn ids_round_trip_and_are_bounded() {
        let mut bytes = b"7".to_vec();
        for id in [100u64, 103, 101, u64::MAX - 3, 104] {
            let (updates, payload) = split(&bytes);
            bytes = join(updates, id, 4, payload);
        }
        let (updates, payload) = split(&bytes);
        assert_eq!(payload, b"7");
        assert_eq!(
            updates.iter().collect::<Vec<_>>(),
            [103, 101, u64::MAX - 3, 104]
        );
        assert!(updates.contains(101) && !updates.contains(100));
        // The same id again moves to the end, once.
        let again = join(updates, 103, 4, b"8");
        let (updates, payload) = split(&again);
        assert_eq!(payload, b"8");
        assert_eq!(
            updates.iter().collect::<Vec<_>>(),
            [101, u64::MAX - 3, 104, 103]
        );
    }

    #[test]
    fn rejoin_equals_join() {
        let generated = |n: u64| (n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | GENERATED;
        for keep in [1usize, 2, 3, 5, 32] {
            let mut slow = b"p".to_vec();
            let mut fast = b"p".to_vec();
            let ids: Vec<u64> = (0..40)
                .map(|i| match i % 7 {
                    3 => generated(i),
                    5 => 100 + i / 2, // repeats an earlier id now and then
                    _ => 100 + i,
                })
                .collect();
            for &id in &ids {
                let (updates, payload) = split(&slow);
                slow = join(updates, id, keep, payload);
                let (updates, payload) = split(&fast);
                let payload_at = fast.len() - payload.len();
                let scan = updates.scan(id);
                assert_eq!(scan.applied, updates.contains(id));
                fast = rejoin(&fast, payload_at, &scan, id, keep, payload);
                assert_eq!(fast, slow, "keep {keep}, id {id}");
            }
        }
    }

    #[test]
    fn a_first_header_is_what_first_gives() {
        for id in [0, 1, 584_120_332, u64::MAX, GENERATED | 77] {
            let mut bytes = Vec::new();
            first_header(&mut bytes, id);
            bytes.extend_from_slice(b"{}");
            assert_eq!(bytes, first(id, b"{}"));
        }
    }

    #[test]
    fn scanning_stored_bytes_is_split_and_scan() {
        let generated = |n: u64| (n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | GENERATED;
        let mut stored = b"p".to_vec();
        let mut values = vec![stored.clone(), b"\0MSu\x05\xff".to_vec(), b"\0MSu".to_vec()];
        for i in 0..40u64 {
            let id = if i % 3 == 0 { generated(i) } else { 700 + i };
            stored = join(split(&stored).0, id, 32, b"p");
            values.push(stored.clone());
        }
        for bytes in &values {
            for id in [700, 702, generated(3), 5] {
                let (updates, payload) = split(bytes);
                assert_eq!(
                    scan_stored(bytes, id),
                    (updates.scan(id), bytes.len() - payload.len())
                );
            }
        }
    }

    #[test]
    fn rejoin_equals_join_with_many_generated_ids() {
        let generated = |n: u64| (n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | GENERATED;
        // All generated (a context without update ids), every other one, every third,
        // and generated ids between Telegram ones, for several bounds.
        for every in [1u64, 2, 3, 5] {
            for keep in [1usize, 2, 8, 9, 10, 32] {
                let mut slow = b"p".to_vec();
                let mut fast = b"p".to_vec();
                for i in 0..60u64 {
                    let id = if i % every == 0 {
                        generated(i)
                    } else {
                        500 + i
                    };
                    let (updates, payload) = split(&slow);
                    slow = join(updates, id, keep, payload);
                    let (updates, payload) = split(&fast);
                    let payload_at = fast.len() - payload.len();
                    let scan = updates.scan(id);
                    fast = rejoin(&fast, payload_at, &scan, id, keep, payload);
                    assert_eq!(fast, slow, "every {every}, keep {keep}, update {i}");
                }
                let (updates, _) = split(&fast);
                let kept = updates.iter().filter(|id| id & GENERATED != 0).count();
                assert!(kept <= GENERATED_REMEMBERED, "{kept} generated ids kept");
            }
        }
    }

    #[test]
    fn telegram_ids_cost_a_few_bytes_each() {
        let mut bytes = Vec::new();
        for id in 584_120_332u64..584_120_364 {
            let (updates, payload) = split(&bytes);
            bytes = join(updates, id, DEFAULT_REMEMBERED, payload);
        }
        assert!(bytes.len() <= 4 + 1 + 5 + 31, "{} bytes", bytes.len());
    }
}
