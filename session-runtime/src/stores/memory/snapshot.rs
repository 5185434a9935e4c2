//! The snapshot file of a [`MemoryStore`](super::MemoryStore).
//!
//! Format: "MSSNAP1\n", the last revision (u64), the entry count (u64), then per entry:
//! key length (u32), key, value length (u32), value, revision (u64), expiry in unix
//! milliseconds (i64, -1 for none); last, an FNV-1a 64 checksum of everything before it.
//! All numbers little-endian.

use std::{
    io::{self, Read, Write as _},
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::entry::{Entry, NEVER};
use crate::store::StoreError;

const MAGIC: &[u8] = b"MSSNAP1\n";

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The snapshot of the live ones of `entries` (expiries are nanoseconds of the store's
/// clock, which reads `now` at the wall time `now_wall`).
pub(super) fn encode<'a>(
    entries: impl IntoIterator<Item = Entry<'a>>,
    last_revision: u64,
    now: u64,
    now_wall: SystemTime,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&last_revision.to_le_bytes());
    let count_at = out.len();
    out.extend_from_slice(&0u64.to_le_bytes());
    let mut count = 0u64;
    for entry in entries {
        if !entry.live(now) {
            continue;
        }
        let (key, value) = (entry.key(), entry.value());
        // Entries hold at most u32::MAX bytes of key and of value.
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
        out.extend_from_slice(&entry.revision().to_le_bytes());
        let expires = match entry.expires() {
            NEVER => -1i64,
            at => {
                let wall = now_wall + Duration::from_nanos(at.saturating_sub(now));
                wall.duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            }
        };
        out.extend_from_slice(&expires.to_le_bytes());
        count += 1;
    }
    out[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
    let checksum = fnv1a(&out);
    out.extend_from_slice(&checksum.to_le_bytes());
    out
}

/// Writes `bytes` to `path` atomically: a temporary file, synced, renamed over it.
pub(super) fn save(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// Reads the snapshot at `path`, if there is one: calls `entry(key, value, revision,
/// expires)` for each entry still live (expiries in nanoseconds of the store's clock,
/// which reads `now` at the wall time `now_wall`), and returns the last revision.
pub(super) fn load(
    path: &Path,
    now: u64,
    now_wall: SystemTime,
    mut entry: impl FnMut(&str, &[u8], u64, u64),
) -> Result<u64, StoreError> {
    let corrupt = |what: &str| {
        StoreError::Corrupt(format!("memory store snapshot {}: {what}", path.display()))
    };
    let mut bytes = Vec::new();
    match std::fs::File::open(path) {
        Ok(mut file) => file
            .read_to_end(&mut bytes)
            .map_err(|e| StoreError::backend(format!("snapshot {}: {e}", path.display())))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(StoreError::backend(format!(
                "snapshot {}: {e}",
                path.display()
            )));
        }
    };
    if bytes.len() < MAGIC.len() + 24 || !bytes.starts_with(MAGIC) {
        return Err(corrupt("not a multisession snapshot (bad header)"));
    }
    let (body, checksum) = bytes.split_at(bytes.len() - 8);
    if fnv1a(body) != u64::from_le_bytes(checksum.try_into().map_err(|_| corrupt("truncated"))?) {
        return Err(corrupt("checksum mismatch (truncated or damaged)"));
    }
    let mut rest = &body[MAGIC.len()..];
    let mut take = |n: usize| -> Result<&[u8], StoreError> {
        let Some((head, tail)) = rest.split_at_checked(n) else {
            return Err(corrupt("truncated entry"));
        };
        rest = tail;
        Ok(head)
    };
    let u64_of = |b: &[u8]| {
        b.try_into()
            .map(u64::from_le_bytes)
            .map_err(|_| corrupt("bad number"))
    };
    let last_revision = u64_of(take(8)?)?;
    let count = u64_of(take(8)?)?;
    for _ in 0..count {
        let key_len =
            u32::from_le_bytes(take(4)?.try_into().map_err(|_| corrupt("bad length"))?) as usize;
        let key = std::str::from_utf8(take(key_len)?).map_err(|_| corrupt("key is not UTF-8"))?;
        let value_len =
            u32::from_le_bytes(take(4)?.try_into().map_err(|_| corrupt("bad length"))?) as usize;
        let value = take(value_len)?;
        let revision = u64_of(take(8)?)?;
        let expires = i64::from_le_bytes(take(8)?.try_into().map_err(|_| corrupt("bad expiry"))?);
        let expires = if expires < 0 {
            NEVER
        } else {
            let wall = UNIX_EPOCH + Duration::from_millis(expires as u64);
            match wall.duration_since(now_wall) {
                Ok(left) => now
                    .saturating_add(u64::try_from(left.as_nanos()).unwrap_or(u64::MAX))
                    .min(NEVER - 1),
                Err(_) => continue, // expired while the bot was down
            }
        };
        entry(key, value, revision, expires);
    }
    if !rest.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(last_revision)
}
