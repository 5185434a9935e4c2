//! The keys in order, for listing, counting and sweeping without the store's lock.
//!
//! A two-level sorted array, like a B+tree of height two: a top array of slots, each with
//! a separator key and a chunk of at most [`MAX`] entry pointers in key order. Slot `i`
//! holds the keys from its separator up to the next slot's (the first slot's separator is
//! empty). A chunk's pointers may be swapped one by one (an entry that moved to a larger
//! allocation; same key, same place), and its count of expiring entries changes; anything
//! else (a key created or removed) builds a new chunk that is swapped into the slot, and a
//! chunk that splits, merges or empties publishes a new top array. The last chunk also
//! takes a key above all others in place while it has room.
//!
//! Readers take no lock: a [`Reader`] is pinned to an epoch ([`crossbeam_epoch`]) and
//! counted. What a writer takes out (a chunk, a top array, an entry of the store) is freed
//! at once while no reader is counted, and otherwise after every reader pinned before it
//! unpinned. So a listing walks while writers go on, and no writer waits for a listing.
//!
//! Writers are serialized (the store calls them under its lock; the index also has a
//! writer lock of its own, so it is safe on its own). Finding a key's place costs a binary
//! search of the separators (contiguous bytes) and one of the chunk. Memory: one pointer
//! per entry (chunks are allocated at their exact length), plus per chunk a slot, a short
//! separator and two small allocations.
//!
//! What a reader sees while writers go on: each chunk as it was when loaded; a key present
//! all along is seen exactly once, in order (a top array's ranges never change), and one
//! written or removed meanwhile may or may not be.

use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering, fence};

use crossbeam_epoch::{self as epoch, Guard};
use parking_lot::Mutex;

use super::entry::{EntryPtr, NEVER, Pinned};

/// The most entries a chunk holds: creating or removing a key copies one chunk (at most
/// 4 KiB of pointers); counting visits one chunk per 512 keys at least.
const MAX: usize = 512;

/// A chunk that shrinks below this merges with a neighbour that has room.
const MERGE_BELOW: usize = MAX / 8;

pub(super) struct Index {
    top: AtomicPtr<Top>,
    writer: Mutex<()>,
    /// How many readers are walking. While none is, what a writer takes out is freed at
    /// once (while still in the writer's cache); otherwise after the epoch.
    readers: AtomicUsize,
}

/// A reader of the index: pinned to the epoch, and counted.
pub(super) struct Reader<'a> {
    readers: &'a AtomicUsize,
    guard: Guard,
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        // Release: what this reader read happens before a writer that sees it gone frees.
        self.readers.fetch_sub(1, Ordering::Release);
    }
}

struct Top {
    chunks: Box<[AtomicPtr<Chunk>]>,
    /// The separators, end to end: slot `i`'s is `separators[ends[i - 1]..ends[i]]`
    /// (`ends[-1]` being 0, so the first is empty).
    separators: Box<[u8]>,
    ends: Box<[u32]>,
}

/// Up to [`MAX`] entries in key order.
struct Chunk {
    /// How many of the entries have an expiry (kept by the writers; while it is zero, a
    /// count needs no look at the entries).
    expiring: AtomicU32,
    /// How many of `entries` are in use: a key above all others of the last chunk is
    /// added in place while there is room (keys written in increasing order copy no
    /// chunk); any other change copies the chunk.
    len: AtomicU32,
    entries: Box<[AtomicPtr<u8>]>,
}

// SAFETY: entry pointers are only dereferenced under the rules of `EntryPtr`.
unsafe impl Send for Index {}
// SAFETY: as above; readers only load through atomics, writers are serialized.
unsafe impl Sync for Index {}

/// The entry of a reader, alive for the guard's lifetime.
fn pinned<'g>(entry: EntryPtr, _guard: &'g Guard) -> Pinned<'g> {
    // SAFETY: entries reachable from the index are alive while a guard pinned before
    // reaching them lives: the store retires an entry (`retire_entry`) only after taking
    // it out of the index, and the index retires what it swaps out.
    unsafe { entry.pinned::<'g>() }
}

fn key(entry: EntryPtr, guard: &Guard) -> &[u8] {
    pinned(entry, guard).key().as_bytes()
}

fn has_expiry(entry: EntryPtr, guard: &Guard) -> bool {
    pinned(entry, guard).expires() != NEVER
}

fn expiring_in(entries: &[EntryPtr], guard: &Guard) -> u32 {
    entries.iter().filter(|e| has_expiry(**e, guard)).count() as u32
}

/// The shortest key above `left` and at or below `right` (`left < right`): a prefix of
/// `right`.
fn separator(left: &[u8], right: &[u8]) -> Vec<u8> {
    let common = left.iter().zip(right).take_while(|(a, b)| a == b).count();
    right[..(common + 1).min(right.len())].to_vec()
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

/// A chunk of `entries`, with room for `capacity` (at least as many).
fn new_chunk(entries: &[EntryPtr], expiring: u32, capacity: usize) -> *mut Chunk {
    let mut slots: Vec<AtomicPtr<u8>> = Vec::with_capacity(capacity.max(entries.len()));
    slots.extend(entries.iter().map(|e| AtomicPtr::new(e.as_raw())));
    slots.resize_with(slots.capacity(), || AtomicPtr::new(std::ptr::null_mut()));
    Box::into_raw(Box::new(Chunk {
        expiring: AtomicU32::new(expiring),
        len: AtomicU32::new(entries.len() as u32),
        entries: slots.into_boxed_slice(),
    }))
}

/// A top array of `slots` (chunk, separator); the first separator is taken as empty.
fn new_top(slots: &[(*mut Chunk, &[u8])]) -> *mut Top {
    let mut separators = Vec::new();
    let mut ends = Vec::with_capacity(slots.len());
    for (i, (_, separator)) in slots.iter().enumerate() {
        if i > 0 {
            separators.extend_from_slice(separator);
        }
        ends.push(u32::try_from(separators.len()).expect("separators under 4 GiB"));
    }
    Box::into_raw(Box::new(Top {
        chunks: slots.iter().map(|(c, _)| AtomicPtr::new(*c)).collect(),
        separators: separators.into_boxed_slice(),
        ends: ends.into_boxed_slice(),
    }))
}

/// A chunk or top array a writer took out, to free.
struct Owned<T>(*mut T);

// SAFETY: only ever freed, by whichever thread runs the epoch's deferred functions.
unsafe impl<T> Send for Owned<T> {}

impl<T> Owned<T> {
    /// # Safety
    ///
    /// From `Box::into_raw`, freed once.
    unsafe fn free(self) {
        // SAFETY: the caller's promise.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

impl Top {
    fn len(&self) -> usize {
        self.chunks.len()
    }

    fn separator(&self, slot: usize) -> &[u8] {
        let start = if slot == 0 { 0 } else { self.ends[slot - 1] };
        &self.separators[start as usize..self.ends[slot] as usize]
    }

    /// The slot whose range holds `key` (the top has slots).
    fn slot_of(&self, key: &[u8]) -> usize {
        partition(self.len(), |i| self.separator(i) <= key) - 1
    }

    fn chunk<'g>(&'g self, slot: usize, _guard: &'g Guard) -> &'g Chunk {
        // SAFETY: slots always hold a published chunk, retired only after being swapped
        // out, and freed only after every guard pinned before that is gone.
        unsafe { &*self.chunks[slot].load(Ordering::Acquire) }
    }

    /// Every slot, for a writer building a new top array.
    fn slots(&self) -> Vec<(*mut Chunk, &[u8])> {
        (0..self.len())
            .map(|i| (self.chunks[i].load(Ordering::Relaxed), self.separator(i)))
            .collect()
    }
}

impl Chunk {
    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire) as usize
    }

    fn get(&self, position: usize) -> EntryPtr {
        EntryPtr::from_raw(self.entries[position].load(Ordering::Acquire))
    }

    fn to_vec(&self) -> Vec<EntryPtr> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }

    /// The first position whose key is not `before`.
    fn position(&self, guard: &Guard, before: impl Fn(&[u8]) -> bool) -> usize {
        partition(self.len(), |i| before(key(self.get(i), guard)))
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
        // SAFETY: owned by the index, reachable from nowhere else now.
        let top = unsafe { Box::from_raw(*self.top.get_mut()) };
        for chunk in &top.chunks {
            // SAFETY: as above.
            drop(unsafe { Box::from_raw(chunk.load(Ordering::Relaxed)) });
        }
    }
}

impl Index {
    /// An index of `entries`, which are sorted by key, alive and unique.
    pub(super) fn from_sorted(entries: Vec<EntryPtr>) -> Self {
        let guard = &epoch::pin();
        // Three quarters full: room for some creates before the first split.
        let parts: Vec<&[EntryPtr]> = entries.chunks(MAX * 3 / 4).collect();
        let separators: Vec<Vec<u8>> = parts
            .iter()
            .enumerate()
            .map(|(i, part)| match i {
                0 => Vec::new(),
                _ => separator(
                    key(parts[i - 1][parts[i - 1].len() - 1], guard),
                    key(part[0], guard),
                ),
            })
            .collect();
        let slots: Vec<(*mut Chunk, &[u8])> = parts
            .iter()
            .zip(&separators)
            .map(|(part, separator)| {
                (
                    new_chunk(part, expiring_in(part, guard), part.len()),
                    &separator[..],
                )
            })
            .collect();
        Index {
            top: AtomicPtr::new(new_top(&slots)),
            writer: Mutex::new(()),
            readers: AtomicUsize::new(0),
        }
    }

    /// A reader: it may walk the index until dropped.
    pub(super) fn reader(&self) -> Reader<'_> {
        let guard = epoch::pin();
        self.readers.fetch_add(1, Ordering::Relaxed);
        // Pairs with the fence in `dispose`: either that writer sees this reader counted,
        // or this reader's loads below see what the writer took out already gone.
        fence(Ordering::SeqCst);
        Reader {
            readers: &self.readers,
            guard,
        }
    }

    /// Runs `free` now if no reader is walking, else once every reader that may have
    /// reached what it frees is done. For writers, after taking it out of the index.
    ///
    /// # Safety
    ///
    /// `free` frees something no longer reachable from the index, and nothing else
    /// frees it.
    unsafe fn dispose(&self, guard: &Guard, free: impl FnOnce()) {
        fence(Ordering::SeqCst);
        if self.readers.load(Ordering::Acquire) == 0 {
            free();
        } else {
            // SAFETY: readers that may hold it pinned before it was taken out (they count
            // themselves after pinning), so the epoch runs `free` after them.
            unsafe { guard.defer_unchecked(free) };
        }
    }

    /// Frees `entry`, taken out of the store's table and this index, once no reader can
    /// hold it.
    ///
    /// # Safety
    ///
    /// The entry is out of the hash table and the index, and nothing frees it otherwise.
    pub(super) unsafe fn retire_entry(&self, entry: EntryPtr) {
        let guard = &epoch::pin();
        // SAFETY: the caller's promise.
        unsafe { self.dispose(guard, move || entry.free()) }
    }

    /// Frees a chunk or top array taken out of the index, once no reader can hold it.
    ///
    /// # Safety
    ///
    /// `ptr` came from `Box::into_raw`, is no longer reachable from the index, and is
    /// retired once.
    unsafe fn retire<T>(&self, guard: &Guard, ptr: *mut T) {
        let owned = Owned(ptr);
        // SAFETY: the caller's promise.
        unsafe { self.dispose(guard, move || owned.free()) }
    }

    fn top<'g>(&'g self, _guard: &'g Guard) -> &'g Top {
        // SAFETY: the top is always a published array, retired only after a new one
        // replaced it.
        unsafe { &*self.top.load(Ordering::Acquire) }
    }

    /// Where `key_` is or would go: the top, slot and position (the top has slots).
    fn locate<'g>(&'g self, guard: &'g Guard, key_: &[u8]) -> (&'g Top, usize, usize) {
        let top = self.top(guard);
        let slot = top.slot_of(key_);
        let position = top.chunk(slot, guard).position(guard, |k| k < key_);
        (top, slot, position)
    }

    /// Where `entry` is: the top, slot and position, if indexed. For writers (holding
    /// the writer lock). Scans its chunk for the pointer (≤ 4 KiB, in order) rather than
    /// comparing keys: no entry but this one is read.
    fn find<'g>(&'g self, guard: &'g Guard, entry: EntryPtr) -> Option<(&'g Top, usize, usize)> {
        let top = self.top(guard);
        if top.len() == 0 {
            return None;
        }
        let slot = top.slot_of(key(entry, guard));
        let chunk = top.chunk(slot, guard);
        let raw = entry.as_raw();
        // SAFETY: `AtomicPtr<u8>` has the layout of `*mut u8`. Only writers store to a
        // chunk, and the caller is the only writer, so these plain reads race with no
        // store (readers only load); plain reads let the scan use vector instructions.
        let pointers: &[*mut u8] = unsafe { &*(&raw const *chunk.entries as *const [*mut u8]) };
        let position = pointers[..chunk.len()].iter().position(|e| *e == raw)?;
        Some((top, slot, position))
    }

    /// Adds `entry` (alive, its key not in the index).
    pub(super) fn insert(&self, entry: EntryPtr) {
        let _writer = self.writer.lock();
        let guard = &epoch::pin();
        let flag = u32::from(has_expiry(entry, guard));
        let top = self.top(guard);
        if top.len() == 0 {
            self.publish(guard, &[(new_chunk(&[entry], flag, MAX), &b""[..])]);
            return;
        }
        let (top, slot, position) = self.locate(guard, key(entry, guard));
        let chunk = top.chunk(slot, guard);
        let len = chunk.len();
        if position == len && len < chunk.entries.len() {
            // At the end, with room: in place. Readers that loaded the length before see
            // the chunk without it.
            chunk.entries[len].store(entry.as_raw(), Ordering::Relaxed);
            chunk.expiring.fetch_add(flag, Ordering::Relaxed);
            chunk.len.store(len as u32 + 1, Ordering::Release);
            return;
        }
        let old = top.chunks[slot].load(Ordering::Relaxed);
        let last = slot + 1 == top.len();
        let mut entries = chunk.to_vec();
        entries.insert(position, entry);
        if entries.len() <= MAX {
            // The last chunk, growing at its end, gets room to grow in place.
            let capacity = if last && position == len {
                MAX
            } else {
                entries.len()
            };
            let new = new_chunk(&entries, chunk.expiring() + flag, capacity);
            top.chunks[slot].store(new, Ordering::Release);
            // SAFETY: swapped out just now.
            unsafe { self.retire(guard, old) };
            return;
        }
        // A full chunk splits in two. Keys written in increasing order (added at the end
        // of the last chunk) leave it full and start a new one.
        let at = if last && position == MAX {
            MAX
        } else {
            entries.len() / 2
        };
        let (left, right) = entries.split_at(at);
        let separator = separator(key(left[left.len() - 1], guard), key(right[0], guard));
        let mut slots = top.slots();
        let left_chunk = if at == MAX {
            old
        } else {
            new_chunk(left, expiring_in(left, guard), left.len())
        };
        let right_capacity = if at == MAX { MAX } else { right.len() };
        let right_chunk = new_chunk(right, expiring_in(right, guard), right_capacity);
        let left_separator = slots[slot].1;
        slots.splice(
            slot..=slot,
            [(left_chunk, left_separator), (right_chunk, &separator[..])],
        );
        self.publish(guard, &slots);
        if at != MAX {
            // SAFETY: replaced by the two halves in the new top.
            unsafe { self.retire(guard, old) };
        }
    }

    /// Takes out `entry` (in the index). Returns whether it was there.
    pub(super) fn remove(&self, entry: EntryPtr) -> bool {
        let _writer = self.writer.lock();
        let guard = &epoch::pin();
        let Some((top, slot, position)) = self.find(guard, entry) else {
            return false;
        };
        let chunk = top.chunk(slot, guard);
        let old = top.chunks[slot].load(Ordering::Relaxed);
        let mut entries = chunk.to_vec();
        entries.remove(position);
        let expiring = chunk.expiring() - u32::from(has_expiry(entry, guard));
        let mut retired = vec![old];
        if entries.is_empty() {
            // The slot goes; its range joins the previous slot's (or, for the first
            // slot, the next one starts from the empty separator).
            let mut slots = top.slots();
            slots.remove(slot);
            self.publish(guard, &slots);
        } else if entries.len() < MERGE_BELOW && top.len() > 1 {
            // Merge with the smaller neighbour, if the two fit in one chunk.
            let neighbour = if slot == 0 {
                1
            } else if slot + 1 == top.len()
                || top.chunk(slot - 1, guard).len() <= top.chunk(slot + 1, guard).len()
            {
                slot - 1
            } else {
                slot + 1
            };
            let other = top.chunk(neighbour, guard);
            if other.len() + entries.len() > MAX {
                let new = new_chunk(&entries, expiring, entries.len());
                top.chunks[slot].store(new, Ordering::Release);
            } else {
                let first = slot.min(neighbour);
                let merged = if neighbour < slot {
                    [other.to_vec(), entries].concat()
                } else {
                    [entries, other.to_vec()].concat()
                };
                let merged = new_chunk(&merged, expiring + other.expiring(), merged.len());
                let mut slots = top.slots();
                retired.push(slots[neighbour].0);
                let separator = slots[first].1;
                slots.splice(first..=first + 1, [(merged, separator)]);
                self.publish(guard, &slots);
            }
        } else {
            let new = new_chunk(&entries, expiring, entries.len());
            top.chunks[slot].store(new, Ordering::Release);
        }
        for chunk in retired {
            // SAFETY: swapped out, or left out of the new top, above.
            unsafe { self.retire(guard, chunk) };
        }
        true
    }

    /// Puts `new` where `old` is (the same key: a value that outgrew its entry), in
    /// place: a reader finds one or the other.
    pub(super) fn replace(&self, old: EntryPtr, new: EntryPtr) {
        let _writer = self.writer.lock();
        let guard = &epoch::pin();
        let Some((top, slot, position)) = self.find(guard, old) else {
            debug_assert!(false, "replacing an entry that is not indexed");
            return;
        };
        let chunk = top.chunk(slot, guard);
        chunk.entries[position].store(new.as_raw(), Ordering::Release);
        match (has_expiry(old, guard), has_expiry(new, guard)) {
            (false, true) => chunk.expiring.fetch_add(1, Ordering::Relaxed),
            (true, false) => chunk.expiring.fetch_sub(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    /// An indexed entry's value was given or lost its expiry in place.
    pub(super) fn expiry_changed(&self, entry: EntryPtr, now_expires: bool) {
        let _writer = self.writer.lock();
        let guard = &epoch::pin();
        if let Some((top, slot, _)) = self.find(guard, entry) {
            let chunk = top.chunk(slot, guard);
            if now_expires {
                chunk.expiring.fetch_add(1, Ordering::Relaxed);
            } else {
                chunk.expiring.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn publish(&self, guard: &Guard, slots: &[(*mut Chunk, &[u8])]) {
        let swapped = self.top.swap(new_top(slots), Ordering::AcqRel);
        // SAFETY: swapped out just now.
        unsafe { self.retire(guard, swapped) };
    }

    /// The entries from the first key at or above `from` (above it if `after`), in
    /// order, without any lock.
    pub(super) fn walk<'g>(&'g self, reader: &'g Reader<'_>, from: &str, after: bool) -> Walk<'g> {
        let guard = &reader.guard;
        let top = self.top(guard);
        let from = from.as_bytes();
        let (chunk, slot, position) = if top.len() == 0 {
            (None, 0, 0)
        } else {
            let slot = top.slot_of(from);
            let chunk = top.chunk(slot, guard);
            let position = chunk.position(guard, |k| if after { k <= from } else { k < from });
            (Some(chunk), slot, position)
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
    /// at `now`. Visits the chunks of the prefix (one per 512 keys at least) and looks at
    /// keys only in the first and last, and at entries only in chunks where some expire.
    /// Calls `step` once per chunk (a test hook).
    pub(super) fn count(
        &self,
        reader: &Reader<'_>,
        prefix: &str,
        now: u64,
        step: impl Fn(),
    ) -> u64 {
        let guard = &reader.guard;
        let top = self.top(guard);
        if top.len() == 0 {
            return 0;
        }
        let prefix = prefix.as_bytes();
        // Keys below the prefix, then the prefix's keys, then keys above them all.
        let below = |k: &[u8]| k < prefix;
        let within = |k: &[u8]| k < prefix || k.starts_with(prefix);
        let first = top.slot_of(prefix);
        let last = partition(top.len(), |i| within(top.separator(i))) - 1;
        let mut total = 0u64;
        for slot in first..=last {
            step();
            let chunk = top.chunk(slot, guard);
            // The slots between hold only keys of the prefix: their ranges lie inside it.
            let start = if slot == first {
                chunk.position(guard, below)
            } else {
                0
            };
            let end = if slot == last {
                chunk.position(guard, within)
            } else {
                chunk.len()
            };
            if end <= start {
                continue;
            }
            total += if chunk.expiring() == 0 {
                (end - start) as u64
            } else {
                (start..end)
                    .filter(|i| pinned(chunk.get(*i), guard).expires() > now)
                    .count() as u64
            };
        }
        total
    }

    /// The entries of chunks that have expiring entries, in order (for sweeping).
    pub(super) fn expiring<'g>(
        &'g self,
        reader: &'g Reader<'_>,
    ) -> impl Iterator<Item = (EntryPtr, Pinned<'g>)> {
        let guard = &reader.guard;
        let top = self.top(guard);
        (0..top.len())
            .map(move |slot| top.chunk(slot, guard))
            .filter(|chunk| chunk.expiring() > 0)
            .flat_map(move |chunk| (0..chunk.len()).map(move |i| chunk.get(i)))
            .map(move |e| (e, pinned(e, guard)))
    }

    /// How many chunks and entries the index has.
    #[cfg(test)]
    pub(super) fn shape(&self) -> (usize, usize) {
        let guard = &epoch::pin();
        let top = self.top(guard);
        let entries = (0..top.len()).map(|i| top.chunk(i, guard).len()).sum();
        (top.len(), entries)
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
            if self.position < chunk.len() {
                let entry = chunk.get(self.position);
                self.position += 1;
                return Some((entry, pinned(entry, self.guard)));
            }
            self.slot += 1;
            self.position = 0;
            self.chunk =
                (self.slot < self.top.len()).then(|| self.top.chunk(self.slot, self.guard));
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
        let reader = &index.reader();
        let guard = &reader.guard;
        let walked: Vec<&str> = index
            .walk(reader, "", false)
            .map(|(_, e)| e.key())
            .collect();
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
                    .walk(reader, from, after)
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
                    index.count(reader, prefix, now, || ()),
                    expected,
                    "prefix {prefix:?} at {now}"
                );
            }
        }
        let top = index.top(guard);
        for slot in 0..top.len() {
            let chunk = top.chunk(slot, guard);
            let entries = chunk.to_vec();
            assert!(!entries.is_empty() && entries.len() <= MAX);
            assert_eq!(chunk.expiring(), expiring_in(&entries, guard));
            // Every key lies in its slot's range.
            assert!(key(entries[0], guard) >= top.separator(slot));
            if slot + 1 < top.len() {
                assert!(key(entries[entries.len() - 1], guard) < top.separator(slot + 1));
            }
        }
    }

    #[test]
    fn the_index_agrees_with_a_sorted_map_through_splits_and_merges() {
        let index = Index::default();
        let mut model: BTreeMap<String, EntryPtr> = BTreeMap::new();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // SAFETY: each entry is retired once, after it left the index.
        let retire = |e: EntryPtr| unsafe { index.retire_entry(e) };
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
    fn separators_are_short_and_between() {
        for (left, right) in [
            ("a", "b"),
            ("ab", "abc"),
            ("", "a"),
            ("ü1", "ü2"),
            ("apple", "banana"),
            ("count:-100000511", "count:-100000512"),
        ] {
            let separator = separator(left.as_bytes(), right.as_bytes());
            assert!(left.as_bytes() < &separator[..] && &separator[..] <= right.as_bytes());
        }
        assert_eq!(separator(b"apple", b"banana"), b"b");
        assert_eq!(separator(b"ab", b"abc"), b"abc");
    }

    #[test]
    fn expiry_changes_in_place_are_counted() {
        let index = Index::default();
        let e = EntryPtr::new("k", b"value", 1, NEVER);
        index.insert(e);
        // SAFETY: alive; this test is the only writer.
        let entry = unsafe { e.grown(b"v", 2, 50) };
        index.replace(e, entry);
        // SAFETY: out of the index, retired once.
        unsafe { index.retire_entry(e) };
        assert_eq!(
            index.count(&index.reader(), "", 60, || ()),
            0,
            "expired at 50"
        );
        // SAFETY: as above.
        unsafe { entry.entry() }.overwrite(b"w", 3, NEVER);
        index.expiry_changed(entry, false);
        assert_eq!(index.count(&index.reader(), "", 60, || ()), 1);
        assert!(index.remove(entry));
        // SAFETY: as above.
        unsafe { index.retire_entry(entry) };
    }
}
