//! The keys in order, for listing, counting and sweeping without the store's lock.
//!
//! A two-level sorted array: a top array of slots, each pointing to a chunk of at most
//! [`MAX`] entry pointers in key order (every key of a slot is below every key of the
//! next). Chunks are never changed once published, but for their count of expiring
//! entries: a writer builds a new chunk and swaps it into its slot, and a split, merge or
//! removal of a chunk publishes a new top array. Readers take nothing but an epoch guard
//! ([`crossbeam_epoch`]): what they reached stays allocated until they unpin, so a listing
//! walks while writers go on, and a writer never waits for a listing.
//!
//! Writers are serialized (the store calls them under its lock; the index also has a
//! writer lock of its own, so it is safe on its own). Memory: one pointer per entry (chunks
//! are allocated at their exact length), plus a slot and two small allocations per chunk.
//!
//! What a reader sees while writers go on: each chunk as it was when loaded, so a key
//! present all along is seen exactly once, and one written or removed meanwhile may or may
//! not be; a reader that needs keys in strictly increasing order (a listing) skips any
//! that is not above the last it took.

use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use crossbeam_epoch::{self as epoch, Guard};
use parking_lot::Mutex;

use super::entry::{EntryPtr, NEVER, Pinned};

/// The most entries a chunk holds: a write that creates or removes a key copies one
/// chunk (≤ 4 KiB of pointers); counting visits n / 512 chunks at least.
const MAX: usize = 512;

/// A chunk that shrinks below this merges with a neighbour that has room.
const MERGE_BELOW: usize = MAX / 8;

pub(super) struct Index {
    top: AtomicPtr<Top>,
    writer: Mutex<()>,
}

struct Top {
    slots: Box<[AtomicPtr<Chunk>]>,
}

/// Up to [`MAX`] entries in key order.
pub(super) struct Chunk {
    /// How many of the entries have an expiry (kept by the writers; while it is zero, a
    /// count needs no look at the entries).
    expiring: AtomicU32,
    entries: Box<[EntryPtr]>,
}

// SAFETY: entry pointers are only dereferenced under the rules of `EntryPtr`.
unsafe impl Send for Index {}
// SAFETY: as above; readers only load through atomics, writers are serialized.
unsafe impl Sync for Index {}

/// The key of an entry reached through the index.
fn key<'g>(entry: EntryPtr, _guard: &'g Guard) -> &'g str {
    // SAFETY: entries in the index are alive while a guard pinned before reaching them
    // lives: the store retires an entry (see `retire_entry`) only after taking it out.
    unsafe { entry.pinned::<'g>() }.key()
}

fn has_expiry(entry: EntryPtr, guard: &Guard) -> bool {
    let _ = guard;
    // SAFETY: as in `key`.
    unsafe { entry.pinned() }.expires() != NEVER
}

fn expiring_in(entries: &[EntryPtr], guard: &Guard) -> u32 {
    entries.iter().filter(|e| has_expiry(**e, guard)).count() as u32
}

fn new_chunk(entries: Vec<EntryPtr>, expiring: u32) -> *mut Chunk {
    Box::into_raw(Box::new(Chunk {
        expiring: AtomicU32::new(expiring),
        entries: entries.into_boxed_slice(),
    }))
}

fn new_top(chunks: Vec<*mut Chunk>) -> *mut Top {
    Box::into_raw(Box::new(Top {
        slots: chunks.into_iter().map(AtomicPtr::new).collect(),
    }))
}

/// Frees `entry` once no reader can hold it.
///
/// # Safety
///
/// The entry is out of the hash table and the index, and nothing frees it otherwise.
pub(super) unsafe fn retire_entry(guard: &Guard, entry: EntryPtr) {
    // SAFETY: readers that reached it are pinned; the epoch runs this after them.
    unsafe { guard.defer_unchecked(move || entry.free()) }
}

/// Frees a chunk or top array once no reader can hold it.
///
/// # Safety
///
/// `ptr` came from `Box::into_raw`, is no longer reachable from the index, and is
/// retired once.
unsafe fn retire<T>(guard: &Guard, ptr: *mut T) {
    let ptr = SendPtr(ptr);
    // SAFETY: as for `retire_entry`.
    unsafe { guard.defer_unchecked(move || drop(Box::from_raw(ptr.into_inner()))) }
}

struct SendPtr<T>(*mut T);

impl<T> SendPtr<T> {
    fn into_inner(self) -> *mut T {
        self.0
    }
}

impl Top {
    fn chunk<'g>(&'g self, slot: usize, _guard: &'g Guard) -> &'g Chunk {
        // SAFETY: slots always hold a published chunk, retired only after being swapped
        // out, and freed only after every guard pinned before that is gone.
        unsafe { &*self.slots[slot].load(Ordering::Acquire) }
    }

    fn last_key<'g>(&'g self, slot: usize, guard: &'g Guard) -> &'g str {
        let entries = &self.chunk(slot, guard).entries;
        key(entries[entries.len() - 1], guard)
    }
}

/// The first `i` in `0..len` for which `before(i)` is false (`len` if none), for a
/// predicate true then false.
fn partition(len: usize, before: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if before(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

impl Chunk {
    fn position(&self, guard: &Guard, before: impl Fn(&str) -> bool) -> usize {
        self.entries.partition_point(|e| before(key(*e, guard)))
    }

    fn expiring(&self) -> u32 {
        self.expiring.load(Ordering::Relaxed)
    }
}

impl Default for Index {
    fn default() -> Self {
        Self::from_sorted(Vec::new())
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        // Nothing reads any more: free the current top and chunks (not the entries, which
        // the store owns). What was retired before is the epoch's.
        let top = *self.top.get_mut();
        // SAFETY: owned by the index, reachable from nowhere else now.
        let top = unsafe { Box::from_raw(top) };
        for slot in &top.slots {
            // SAFETY: as above.
            drop(unsafe { Box::from_raw(slot.load(Ordering::Relaxed)) });
        }
    }
}

impl Index {
    /// An index of `entries`, which are sorted by key, alive and unique.
    pub(super) fn from_sorted(entries: Vec<EntryPtr>) -> Self {
        let guard = epoch::pin();
        // Three quarters full: room for some creates before the first split.
        let chunks = entries
            .chunks(MAX * 3 / 4)
            .map(|part| new_chunk(part.to_vec(), expiring_in(part, &guard)))
            .collect();
        Index {
            top: AtomicPtr::new(new_top(chunks)),
            writer: Mutex::new(()),
        }
    }

    fn top<'g>(&'g self, _guard: &'g Guard) -> &'g Top {
        // SAFETY: the top is always a published array, retired only after a new one
        // replaced it.
        unsafe { &*self.top.load(Ordering::Acquire) }
    }

    /// Where `key` is or would go: slot and position. The slot is the last one whose
    /// chunk starts at or below `key` (or the first one).
    fn locate<'g>(&'g self, guard: &'g Guard, key_: &str) -> (&'g Top, usize, usize) {
        let top = self.top(guard);
        let slots = top.slots.len();
        if slots == 0 {
            return (top, 0, 0);
        }
        let slot = partition(slots, |i| top.last_key(i, guard) < key_).min(slots - 1);
        let position = top.chunk(slot, guard).position(guard, |k| k < key_);
        (top, slot, position)
    }

    /// Adds `entry` (alive, its key not in the index).
    pub(super) fn insert(&self, entry: EntryPtr) {
        let _writer = self.writer.lock();
        let guard = &epoch::pin();
        let (top, slot, position) = self.locate(guard, key(entry, guard));
        let flag = u32::from(has_expiry(entry, guard));
        if top.slots.is_empty() {
            self.publish_top(guard, top, vec![new_chunk(vec![entry], flag)]);
            return;
        }
        let chunk = top.chunk(slot, guard);
        let old = top.slots[slot].load(Ordering::Relaxed);
        let len = chunk.entries.len();
        if len < MAX {
            let mut entries = Vec::with_capacity(len + 1);
            entries.extend_from_slice(&chunk.entries[..position]);
            entries.push(entry);
            entries.extend_from_slice(&chunk.entries[position..]);
            top.slots[slot].store(
                new_chunk(entries, chunk.expiring() + flag),
                Ordering::Release,
            );
            // SAFETY: swapped out just now.
            unsafe { retire(guard, old) };
            return;
        }
        // A full chunk splits. Keys written in increasing order (appended to the last
        // chunk) leave it full and start a new one.
        let mut chunks = self.chunks_of(top);
        if slot + 1 == top.slots.len() && position == len {
            chunks.push(new_chunk(vec![entry], flag));
        } else {
            let mut entries = chunk.entries.to_vec();
            entries.insert(position, entry);
            let right = entries.split_off(entries.len() / 2);
            let (left_expiring, right_expiring) =
                (expiring_in(&entries, guard), expiring_in(&right, guard));
            chunks.splice(
                slot..=slot,
                [
                    new_chunk(entries, left_expiring),
                    new_chunk(right, right_expiring),
                ],
            );
            // SAFETY: replaced by the two halves in the new top.
            unsafe { retire(guard, old) };
        }
        self.publish_top(guard, top, chunks);
    }

    /// Takes out `entry` (in the index). Returns whether it was there.
    pub(super) fn remove(&self, entry: EntryPtr) -> bool {
        let _writer = self.writer.lock();
        let guard = &epoch::pin();
        let (top, slot, position) = self.locate(guard, key(entry, guard));
        let Some(chunk) = (!top.slots.is_empty()).then(|| top.chunk(slot, guard)) else {
            return false;
        };
        if chunk.entries.get(position) != Some(&entry) {
            return false;
        }
        let old = top.slots[slot].load(Ordering::Relaxed);
        let flag = u32::from(has_expiry(entry, guard));
        let mut entries = chunk.entries.to_vec();
        entries.remove(position);
        let expiring = chunk.expiring() - flag;
        if entries.is_empty() {
            let mut chunks = self.chunks_of(top);
            chunks.remove(slot);
            self.publish_top(guard, top, chunks);
        } else if entries.len() < MERGE_BELOW && top.slots.len() > 1 {
            // Merge with the smaller neighbour, if the two fit in one chunk.
            let neighbour = if slot == 0 {
                1
            } else if slot + 1 == top.slots.len()
                || top.chunk(slot - 1, guard).entries.len()
                    <= top.chunk(slot + 1, guard).entries.len()
            {
                slot - 1
            } else {
                slot + 1
            };
            let other = top.chunk(neighbour, guard);
            if other.entries.len() + entries.len() > MAX {
                top.slots[slot].store(new_chunk(entries, expiring), Ordering::Release);
            } else {
                let merged = if neighbour < slot {
                    [&other.entries[..], &entries].concat()
                } else {
                    [&entries, &other.entries[..]].concat()
                };
                let other_ptr = top.slots[neighbour].load(Ordering::Relaxed);
                let mut chunks = self.chunks_of(top);
                let first = slot.min(neighbour);
                chunks.splice(
                    first..=first + 1,
                    [new_chunk(merged, expiring + other.expiring())],
                );
                self.publish_top(guard, top, chunks);
                // SAFETY: merged into a new chunk of the new top.
                unsafe { retire(guard, other_ptr) };
            }
        } else {
            top.slots[slot].store(new_chunk(entries, expiring), Ordering::Release);
        }
        // SAFETY: swapped out (or left out of the new top) above.
        unsafe { retire(guard, old) };
        true
    }

    /// Puts `new` where `old` is (same key): a value that outgrew its entry.
    pub(super) fn replace(&self, old: EntryPtr, new: EntryPtr) {
        let _writer = self.writer.lock();
        let guard = &epoch::pin();
        let (top, slot, position) = self.locate(guard, key(old, guard));
        if top.slots.is_empty() {
            return;
        }
        let chunk = top.chunk(slot, guard);
        if chunk.entries.get(position) != Some(&old) {
            debug_assert!(false, "replacing an entry that is not indexed");
            return;
        }
        let mut entries = chunk.entries.to_vec();
        entries[position] = new;
        let expiring = chunk.expiring() - u32::from(has_expiry(old, guard))
            + u32::from(has_expiry(new, guard));
        let swapped = top.slots[slot].swap(new_chunk(entries, expiring), Ordering::AcqRel);
        // SAFETY: swapped out just now.
        unsafe { retire(guard, swapped) };
    }

    /// An indexed entry's value was given or lost its expiry in place.
    pub(super) fn expiry_changed(&self, entry: EntryPtr, now_expires: bool) {
        let _writer = self.writer.lock();
        let guard = &epoch::pin();
        let (top, slot, position) = self.locate(guard, key(entry, guard));
        if top.slots.is_empty() {
            return;
        }
        let chunk = top.chunk(slot, guard);
        if chunk.entries.get(position) == Some(&entry) {
            if now_expires {
                chunk.expiring.fetch_add(1, Ordering::Relaxed);
            } else {
                chunk.expiring.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn chunks_of(&self, top: &Top) -> Vec<*mut Chunk> {
        top.slots
            .iter()
            .map(|slot| slot.load(Ordering::Relaxed))
            .collect()
    }

    fn publish_top(&self, guard: &Guard, old: &Top, chunks: Vec<*mut Chunk>) {
        let swapped = self.top.swap(new_top(chunks), Ordering::AcqRel);
        debug_assert!(std::ptr::eq(swapped, old));
        // SAFETY: swapped out just now.
        unsafe { retire(guard, swapped) };
    }

    /// The entries from the first key at or above `from` (above it if `after`), in
    /// order, without any lock.
    pub(super) fn walk<'g>(&'g self, guard: &'g Guard, from: &str, after: bool) -> Walk<'g> {
        let top = self.top(guard);
        let before = |k: &str| if after { k <= from } else { k < from };
        let slot = partition(top.slots.len(), |i| before(top.last_key(i, guard)));
        let (chunk, position) = if slot < top.slots.len() {
            let chunk = top.chunk(slot, guard);
            (Some(chunk), chunk.position(guard, before))
        } else {
            (None, 0)
        };
        Walk {
            top,
            guard,
            slot,
            chunk,
            position,
        }
    }

    /// How many keys start with `prefix` and, in chunks with expiring entries, are live
    /// at `now`. Visits the chunks of the prefix (n / 512 at least), not the keys, where
    /// no value expires. Calls `step` once per chunk (a test hook).
    pub(super) fn count(&self, guard: &Guard, prefix: &str, now: u64, step: impl Fn()) -> u64 {
        let top = self.top(guard);
        let slots = top.slots.len();
        if slots == 0 {
            return 0;
        }
        // Keys below the prefix, then the prefix's keys, then keys above them all.
        let below = |k: &str| k < prefix;
        let within = |k: &str| k < prefix || k.starts_with(prefix);
        let first = partition(slots, |i| below(top.last_key(i, guard)));
        let last = partition(slots, |i| within(top.last_key(i, guard))).min(slots - 1);
        let mut total = 0u64;
        for slot in first..=last {
            step();
            let chunk = top.chunk(slot, guard);
            let start = if slot == first {
                chunk.position(guard, below)
            } else {
                0
            };
            let end = if slot == last {
                chunk.position(guard, within)
            } else {
                chunk.entries.len()
            };
            if end <= start {
                continue;
            }
            total += if chunk.expiring() == 0 {
                (end - start) as u64
            } else {
                chunk.entries[start..end]
                    .iter()
                    // SAFETY: as in `key`.
                    .filter(|e| unsafe { e.pinned() }.expires() > now)
                    .count() as u64
            };
        }
        total
    }

    /// The entries of chunks that have expiring entries, in order (for sweeping).
    pub(super) fn expiring<'g>(
        &'g self,
        guard: &'g Guard,
    ) -> impl Iterator<Item = (EntryPtr, Pinned<'g>)> {
        let top = self.top(guard);
        (0..top.slots.len())
            .map(move |slot| top.chunk(slot, guard))
            .filter(|chunk| chunk.expiring() > 0)
            .flat_map(|chunk| chunk.entries.iter())
            // SAFETY: as in `key`.
            .map(|e| (*e, unsafe { e.pinned() }))
    }

    /// How many chunks and entries the index has.
    #[cfg(test)]
    pub(super) fn shape(&self) -> (usize, usize) {
        let guard = &epoch::pin();
        let top = self.top(guard);
        let entries: usize = (0..top.slots.len())
            .map(|i| top.chunk(i, guard).entries.len())
            .sum();
        (top.slots.len(), entries)
    }
}

/// Entries in key order from a starting point (see [`Index::walk`]).
pub(super) struct Walk<'g> {
    top: &'g Top,
    guard: &'g Guard,
    slot: usize,
    chunk: Option<&'g Chunk>,
    position: usize,
}

impl<'g> Iterator for Walk<'g> {
    type Item = (EntryPtr, Pinned<'g>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let chunk = self.chunk?;
            if let Some(entry) = chunk.entries.get(self.position) {
                self.position += 1;
                // SAFETY: as in `key`.
                return Some((*entry, unsafe { entry.pinned() }));
            }
            self.slot += 1;
            self.position = 0;
            self.chunk =
                (self.slot < self.top.slots.len()).then(|| self.top.chunk(self.slot, self.guard));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// The index agrees with a sorted map of the same entries: whole walks, walks from
    /// any key (at or after it), counts of prefixes before and after some values expire,
    /// chunk sizes and their counts of expiring entries.
    fn check(index: &Index, model: &BTreeMap<String, EntryPtr>) {
        let guard = &epoch::pin();
        let walked: Vec<&str> = index.walk(guard, "", false).map(|(_, e)| e.key()).collect();
        let keys: Vec<&str> = model.keys().map(String::as_str).collect();
        assert_eq!(walked, keys);
        for from in keys.iter().step_by(37).chain(["", "k02500x", "l"].iter()) {
            for after in [false, true] {
                let expected: Vec<&str> = keys
                    .iter()
                    .copied()
                    .filter(|k| if after { k > from } else { k >= from })
                    .take(5)
                    .collect();
                let got: Vec<&str> = index
                    .walk(guard, from, after)
                    .take(5)
                    .map(|(_, e)| e.key())
                    .collect();
                assert_eq!(got, expected, "from {from:?}, after {after}");
            }
        }
        for prefix in ["", "k", "k0", "k01", "k012", "k0123", "k04999", "j", "l"] {
            for now in [0, 100] {
                let expected = model
                    .iter()
                    .filter(|(k, e)| k.starts_with(prefix) && unsafe { e.pinned() }.expires() > now)
                    .count() as u64;
                assert_eq!(
                    index.count(guard, prefix, now, || ()),
                    expected,
                    "prefix {prefix:?} at {now}"
                );
            }
        }
        let top = index.top(guard);
        for slot in 0..top.slots.len() {
            let chunk = top.chunk(slot, guard);
            assert!(!chunk.entries.is_empty() && chunk.entries.len() <= MAX);
            assert_eq!(chunk.expiring(), expiring_in(&chunk.entries, guard));
        }
    }

    #[test]
    fn the_index_agrees_with_a_sorted_map_through_splits_and_merges() {
        let index = Index::default();
        let mut model: BTreeMap<String, EntryPtr> = BTreeMap::new();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let retire = |e: EntryPtr| unsafe { retire_entry(&epoch::pin(), e) };
        // Keys written in increasing order (full chunks), then random creates, removes
        // and replacements (splits, merges, expiring counts), then everything removed.
        for i in 0..3_000 {
            let key = format!("k{:05}", i * 2);
            let e = EntryPtr::new(&key, b"v", 1, if i % 5 == 0 { 100 } else { NEVER });
            index.insert(e);
            model.insert(key, e);
        }
        check(&index, &model);
        for round in 0..30_000 {
            let r = rng.next();
            let key = format!("k{:05}", r % 6_000);
            match model.get(&key).copied() {
                None => {
                    let e =
                        EntryPtr::new(&key, b"v", 1, if r.is_multiple_of(3) { 100 } else { NEVER });
                    index.insert(e);
                    model.insert(key, e);
                }
                Some(old) if r.is_multiple_of(4) => {
                    // SAFETY: alive; this test is the only writer.
                    let new = unsafe {
                        old.grown(&[1; 40], 2, if r.is_multiple_of(8) { 100 } else { NEVER })
                    };
                    index.replace(old, new);
                    model.insert(key, new);
                    retire(old);
                }
                Some(old) => {
                    assert!(index.remove(old));
                    assert!(!index.remove(old), "removed twice");
                    model.remove(&key);
                    retire(old);
                }
            }
            if round % 1_499 == 0 {
                check(&index, &model);
            }
        }
        check(&index, &model);
        while let Some((_, e)) = model.pop_first() {
            assert!(index.remove(e));
            retire(e);
            if model.len().is_multiple_of(700) {
                check(&index, &model);
            }
        }
        assert_eq!(index.shape(), (0, 0));
    }

    #[test]
    fn expiry_changes_in_place_are_counted() {
        let index = Index::default();
        let e = EntryPtr::new("k", b"value", 1, NEVER);
        index.insert(e);
        let guard = &epoch::pin();
        // SAFETY: alive; this test is the only writer.
        let entry = unsafe { e.grown(b"v", 2, 50) };
        index.replace(e, entry);
        assert_eq!(index.count(guard, "", 60, || ()), 0, "expired at 50");
        // SAFETY: as above.
        unsafe { entry.entry() }.overwrite(b"w", 3, NEVER);
        index.expiry_changed(entry, false);
        assert_eq!(index.count(guard, "", 60, || ()), 1);
        assert!(index.remove(entry));
        // SAFETY: out of the index; nothing else has them.
        unsafe {
            retire_entry(guard, e);
            retire_entry(guard, entry);
        }
    }
}
