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
pub const UPDATES_MAGIC: &[u8; 4] = b"\0MSu";

/// How many update ids a stored value remembers by default (see
/// [`Config::remember_updates`](crate::Config::remember_updates)).
pub const DEFAULT_REMEMBERED: usize = 32;

/// The recorded updates and the codec's payload of stored bytes. Bytes without the header
/// (or with a damaged one) are all payload, with no recorded updates.
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
pub fn payload(bytes: &[u8]) -> &[u8] {
    split(bytes).1
}

/// The update ids recorded in a stored value, oldest first.
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
    pub fn contains(&self, id: u64) -> bool {
        self.iter().any(|seen| seen == id)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// How many generated update ids (those of contexts without an id of their own) a value
/// keeps: they only need to outlive the re-runs of their own `run` call, and each costs
/// up to ten bytes.
pub const GENERATED_REMEMBERED: usize = 8;

/// The bit set in generated update ids.
const GENERATED: u64 = 1 << 63;

/// The stored bytes of `payload` changed by update `id`, after the updates `previous`:
/// the newest ids, at most `keep` in all, of which at most [`GENERATED_REMEMBERED`]
/// generated ones.
pub fn join(previous: Updates<'_>, id: u64, keep: usize, payload: &[u8]) -> Vec<u8> {
    let keep = keep.clamp(1, usize::from(u8::MAX));
    let mut kept = vec![id];
    let mut generated = usize::from(id & GENERATED != 0);
    let earlier: Vec<u64> = previous.iter().filter(|&seen| seen != id).collect();
    for &seen in earlier.iter().rev() {
        if kept.len() == keep {
            break;
        }
        if seen & GENERATED != 0 {
            if generated == GENERATED_REMEMBERED {
                continue;
            }
            generated += 1;
        }
        kept.push(seen);
    }
    kept.reverse();
    let count = kept.len();
    let ids = kept.into_iter();
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

fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
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
    fn telegram_ids_cost_a_few_bytes_each() {
        let mut bytes = Vec::new();
        for id in 584_120_332u64..584_120_364 {
            let (updates, payload) = split(&bytes);
            bytes = join(updates, id, DEFAULT_REMEMBERED, payload);
        }
        assert!(bytes.len() <= 4 + 1 + 5 + 31, "{} bytes", bytes.len());
    }
}
