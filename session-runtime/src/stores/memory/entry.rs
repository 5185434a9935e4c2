//! One stored value in one allocation: its revision, lengths, expiry (only if it has
//! one), key and value, with a little room for the value to grow in place.
//!
//! ```text
//! 0   revision   u64 (atomic)   `WRITING` while a write is under way
//! 8   value_len  u32 (atomic)
//! 12  key_len    u32
//! 16  capacity   u32            room for the value
//! 20  flags      u8             HAS_EXPIRY: the expiry word below exists
//! 24  expires    u64 (atomic)   only with HAS_EXPIRY
//! 21 or 32: the key, then the value's room
//! ```
//!
//! The store's lock serializes writers. Listings read entries without that lock: the key
//! never changes, and the revision doubles as the sequence number of a seqlock around the
//! value, its length and its expiry. Every byte a listing may read while a writer changes
//! it goes through atomics on both sides, split the same way (words where the value's room
//! holds whole aligned words, bytes at its ends), so no access races with one of another
//! size. An entry that is replaced or removed is freed only after every listing that may
//! hold it is done (epoch-based reclamation, see `index`).

use std::{
    alloc::{self, Layout},
    marker::PhantomData,
    ptr::{self, NonNull},
    sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering, fence},
};

use crate::store::Record;

/// The expiry of a value that never expires. Expiries are nanoseconds since the store's
/// clock started, so a value is live while `expires > now`.
pub(super) const NEVER: u64 = u64::MAX;

/// The revision word of an entry a writer is changing. Revisions count up from 1, one
/// per write of the whole store, and never reach it.
const WRITING: u64 = u64::MAX;

const REVISION: usize = 0;
const VALUE_LEN: usize = 8;
const KEY_LEN: usize = 12;
const CAPACITY: usize = 16;
const FLAGS: usize = 20;
const EXPIRES: usize = 24;
const HAS_EXPIRY: u8 = 1;

/// The largest key or value an entry holds (its lengths are `u32`).
pub(super) const MAX_LEN: usize = u32::MAX as usize;

/// Where the key starts.
fn key_offset(has_expiry: bool) -> usize {
    if has_expiry { EXPIRES + 8 } else { FLAGS + 1 }
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).expect("entry sizes are checked against MAX_LEN")
}

/// A pointer to an entry. Whoever turns it into an [`Entry`] or a [`Pinned`] vouches
/// that it is alive for as long as that handle is used.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct EntryPtr(NonNull<u8>);

// SAFETY: an entry is plain bytes and atomics; who may touch it when is the store's rule
// (the lock for writers and point reads, an epoch guard for listings), not the thread's.
unsafe impl Send for EntryPtr {}
// SAFETY: as above.
unsafe impl Sync for EntryPtr {}

impl EntryPtr {
    /// A new entry. `key.len()` and `value.len()` must be at most [`MAX_LEN`].
    pub(super) fn new(key: &str, value: &[u8], revision: u64, expires: u64) -> EntryPtr {
        Self::with_room(key, value, revision, expires, expires != NEVER, value.len())
    }

    /// An entry with room for at least `room` bytes of value.
    fn with_room(
        key: &str,
        value: &[u8],
        revision: u64,
        expires: u64,
        has_expiry: bool,
        room: usize,
    ) -> EntryPtr {
        assert!(key.len() <= MAX_LEN && value.len() <= MAX_LEN);
        let start = key_offset(has_expiry) + key.len();
        // Ask for what the allocator hands out anyway (glibc: chunks of 16n bytes, 8 of
        // them its own), so a value a few bytes longer still fits in place.
        let wanted = room.max(value.len());
        let size = ((start + wanted + 8).next_multiple_of(16) - 8).min(start + MAX_LEN);
        let capacity = size - start;
        let layout = layout(size);
        // SAFETY: `layout` has a non-zero size (the header alone is 21 bytes).
        let raw = unsafe { alloc::alloc(layout) };
        let Some(base) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        // SAFETY: the allocation is `size` bytes, 8-aligned; every write below is inside
        // it; nobody else sees it yet.
        unsafe {
            let p = base.as_ptr();
            p.add(REVISION).cast::<u64>().write(revision);
            p.add(VALUE_LEN).cast::<u32>().write(value.len() as u32);
            p.add(KEY_LEN).cast::<u32>().write(key.len() as u32);
            p.add(CAPACITY).cast::<u32>().write(capacity as u32);
            p.add(FLAGS).write(if has_expiry { HAS_EXPIRY } else { 0 });
            if has_expiry {
                p.add(EXPIRES).cast::<u64>().write(expires);
            }
            let k = p.add(key_offset(has_expiry));
            ptr::copy_nonoverlapping(key.as_ptr(), k, key.len());
            ptr::copy_nonoverlapping(value.as_ptr(), k.add(key.len()), value.len());
        }
        EntryPtr(base)
    }

    /// A copy of `self` with room for `value` and its expiry, written at `revision`.
    /// The room grows by half at least: a value that keeps growing (the runtime's list of
    /// recent updates, up to its limit) moves a few times, not at every write.
    ///
    /// # Safety
    ///
    /// `self` is alive and the caller holds the store's lock.
    pub(super) unsafe fn grown(self, value: &[u8], revision: u64, expires: u64) -> EntryPtr {
        // SAFETY: the caller's promise.
        let entry = unsafe { self.entry() };
        let has_expiry = entry.has_expiry_slot() || expires != NEVER;
        let (_, capacity) = entry.raw().room();
        let room = if value.len() > capacity {
            value.len().max(capacity + capacity / 2)
        } else {
            value.len()
        };
        Self::with_room(entry.key(), value, revision, expires, has_expiry, room)
    }

    /// The pointer, for an atomic slot.
    pub(super) fn as_raw(self) -> *mut u8 {
        self.0.as_ptr()
    }

    /// An entry pointer back from an atomic slot that holds one.
    pub(super) fn from_raw(raw: *mut u8) -> EntryPtr {
        EntryPtr(NonNull::new(raw).expect("slots hold entries"))
    }

    /// Frees the entry.
    ///
    /// # Safety
    ///
    /// Nothing can reach the entry any more: it is out of the hash table and the index,
    /// and no listing that may have seen it is still going (see `index::retire`).
    pub(super) unsafe fn free(self) {
        // SAFETY: alive until now (the caller's promise); the header says its size.
        unsafe {
            let p = self.0.as_ptr();
            let has_expiry = p.add(FLAGS).read() & HAS_EXPIRY != 0;
            let key_len = p.add(KEY_LEN).cast::<u32>().read() as usize;
            let capacity = p.add(CAPACITY).cast::<u32>().read() as usize;
            alloc::dealloc(p, layout(key_offset(has_expiry) + key_len + capacity));
        }
    }

    /// The entry, for a holder of the store's lock.
    ///
    /// # Safety
    ///
    /// The entry is alive and the caller holds the store's lock for `'a`.
    pub(super) unsafe fn entry<'a>(self) -> Entry<'a> {
        Entry {
            ptr: self.0,
            _life: PhantomData,
        }
    }

    /// The entry, for a reader without the store's lock.
    ///
    /// # Safety
    ///
    /// The entry stays allocated for `'g` (an epoch guard pinned before the entry was
    /// reached in the index).
    pub(super) unsafe fn pinned<'g>(self) -> Pinned<'g> {
        Pinned {
            ptr: self.0,
            _life: PhantomData,
        }
    }
}

/// Fields both handles read, for as long as `'a` (the handle's lifetime).
#[derive(Clone, Copy)]
struct Raw<'a>(NonNull<u8>, PhantomData<&'a ()>);

impl<'a> Raw<'a> {
    fn at(self, offset: usize) -> *mut u8 {
        // SAFETY: callers pass offsets of the header, inside the allocation.
        unsafe { self.0.as_ptr().add(offset) }
    }

    fn revision(self) -> &'a AtomicU64 {
        // SAFETY: 8-aligned, inside the allocation (alive for 'a), only accessed
        // atomically once published.
        unsafe { AtomicU64::from_ptr(self.at(REVISION).cast()) }
    }

    fn value_len(self) -> &'a AtomicU32 {
        // SAFETY: as for `revision`.
        unsafe { AtomicU32::from_ptr(self.at(VALUE_LEN).cast()) }
    }

    fn fixed(self, offset: usize) -> usize {
        // SAFETY: written before the entry was published, never changed after.
        unsafe { self.at(offset).cast::<u32>().read() as usize }
    }

    fn has_expiry_slot(self) -> bool {
        // SAFETY: as for `fixed`.
        unsafe { self.at(FLAGS).read() & HAS_EXPIRY != 0 }
    }

    fn expires(self) -> u64 {
        if self.has_expiry_slot() {
            // SAFETY: as for `revision`.
            unsafe { AtomicU64::from_ptr(self.at(EXPIRES).cast()) }.load(Ordering::Relaxed)
        } else {
            NEVER
        }
    }

    fn key(self) -> &'a str {
        let len = self.fixed(KEY_LEN);
        // SAFETY: the key's bytes, copied from a `&str` when the entry was made and never
        // written again.
        unsafe {
            let bytes =
                std::slice::from_raw_parts(self.at(key_offset(self.has_expiry_slot())), len);
            std::str::from_utf8_unchecked(bytes)
        }
    }

    /// The value's room and its capacity.
    fn room(self) -> (*mut u8, usize) {
        let start = key_offset(self.has_expiry_slot()) + self.fixed(KEY_LEN);
        (self.at(start), self.fixed(CAPACITY))
    }
}

/// An entry seen by a holder of the store's lock: reads are plain, writes go through
/// the seqlock.
#[derive(Clone, Copy)]
pub(super) struct Entry<'a> {
    ptr: NonNull<u8>,
    _life: PhantomData<&'a ()>,
}

impl<'a> Entry<'a> {
    fn raw(self) -> Raw<'a> {
        Raw(self.ptr, PhantomData)
    }

    pub(super) fn key(self) -> &'a str {
        self.raw().key()
    }

    pub(super) fn revision(self) -> u64 {
        self.raw().revision().load(Ordering::Relaxed)
    }

    pub(super) fn expires(self) -> u64 {
        self.raw().expires()
    }

    pub(super) fn live(self, now: u64) -> bool {
        self.expires() > now
    }

    fn has_expiry_slot(self) -> bool {
        self.raw().has_expiry_slot()
    }

    /// The value's bytes. Listings may read them at the same time (reads only).
    pub(super) fn value(self) -> &'a [u8] {
        let (room, _) = self.raw().room();
        let len = self.raw().value_len().load(Ordering::Relaxed) as usize;
        // SAFETY: `len` bytes of the room hold the value; only a writer changes them, and
        // the caller, holding the lock, is the only one that could.
        unsafe { std::slice::from_raw_parts(room, len) }
    }

    pub(super) fn record(self) -> Record {
        Record::new(self.value().to_vec(), self.revision())
    }

    /// Whether `value` with this expiry can be written in place.
    pub(super) fn fits(self, value: &[u8], expires: u64) -> bool {
        value.len() <= self.raw().room().1 && (expires == NEVER || self.has_expiry_slot())
    }

    /// Writes `value`, `revision` and `expires` in place; [`fits`](Self::fits) said it
    /// fits.
    pub(super) fn overwrite(self, value: &[u8], revision: u64, expires: u64) {
        let raw = self.raw();
        let (room, capacity) = raw.room();
        debug_assert!(self.fits(value, expires));
        // A seqlock write: readers that see `WRITING`, or a revision that changed while
        // they read, read again.
        raw.revision().store(WRITING, Ordering::Relaxed);
        fence(Ordering::Release);
        raw.value_len().store(value.len() as u32, Ordering::Relaxed);
        if raw.has_expiry_slot() {
            // SAFETY: 8-aligned, inside the allocation.
            unsafe { AtomicU64::from_ptr(raw.at(EXPIRES).cast()) }
                .store(expires, Ordering::Relaxed);
        }
        // SAFETY: the room is `capacity` bytes of this live entry; the lock makes this
        // the only writer.
        unsafe { store_bytes(room, capacity, value) };
        raw.revision().store(revision, Ordering::Release);
    }
}

/// An entry seen by a listing, without the store's lock.
#[derive(Clone, Copy)]
pub(super) struct Pinned<'g> {
    ptr: NonNull<u8>,
    _life: PhantomData<&'g ()>,
}

impl<'g> Pinned<'g> {
    pub(super) fn key(self) -> &'g str {
        Raw(self.ptr, PhantomData).key()
    }

    /// The expiry (a writer may be changing it: a hint, exact only under the lock).
    pub(super) fn expires(self) -> u64 {
        Raw(self.ptr, PhantomData).expires()
    }

    /// The record, if live at `now`, as one writer left it (never half of one write and
    /// half of another).
    pub(super) fn read(self, now: u64) -> Option<Record> {
        let raw = Raw(self.ptr, PhantomData);
        let (room, capacity) = raw.room();
        let mut value = Vec::new();
        let mut spins = 0u32;
        loop {
            let revision = raw.revision().load(Ordering::Acquire);
            if revision != WRITING {
                let expires = raw.expires();
                let len = raw.value_len().load(Ordering::Relaxed) as usize;
                value.clear();
                // SAFETY: the room stays allocated for 'g; `len` never exceeds the
                // capacity (writers check it), so the loads stay inside the room.
                unsafe { load_bytes(room, capacity, len.min(capacity), &mut value) };
                fence(Ordering::Acquire);
                if raw.revision().load(Ordering::Relaxed) == revision {
                    return (expires > now).then(|| Record::new(value, revision));
                }
            }
            // A writer (holding the lock, so briefly) is changing it.
            spins += 1;
            if spins.is_multiple_of(64) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// How the room starting at `room` (of `capacity` bytes) splits into atomic units: bytes
/// up to the first 8-aligned address, whole words, bytes after the last whole word.
fn units(room: *const u8, capacity: usize) -> (usize, usize) {
    let head = room.align_offset(8).min(capacity);
    let words_end = head + (capacity - head) / 8 * 8;
    (head, words_end)
}

/// Writes `src` to the start of the room, through atomics (see the module docs).
///
/// # Safety
///
/// `room` is valid for `capacity` bytes, `src.len() <= capacity`, and no other thread
/// writes the room.
unsafe fn store_bytes(room: *mut u8, capacity: usize, src: &[u8]) {
    let (head, words_end) = units(room, capacity);
    let len = src.len();
    let mut i = 0;
    // SAFETY (all loops): every address is inside the room; words are 8-aligned.
    while i < len.min(head) {
        unsafe { AtomicU8::from_ptr(room.add(i)) }.store(src[i], Ordering::Relaxed);
        i += 1;
    }
    while i < len && i < words_end {
        let mut word = [0u8; 8];
        let n = (len - i).min(8);
        word[..n].copy_from_slice(&src[i..i + n]);
        unsafe { AtomicU64::from_ptr(room.add(i).cast()) }
            .store(u64::from_ne_bytes(word), Ordering::Relaxed);
        i += 8;
    }
    while i < len {
        unsafe { AtomicU8::from_ptr(room.add(i)) }.store(src[i], Ordering::Relaxed);
        i += 1;
    }
}

/// Appends the first `len` bytes of the room to `out`, through atomics.
///
/// # Safety
///
/// `room` is valid for `capacity` bytes and `len <= capacity`.
unsafe fn load_bytes(room: *mut u8, capacity: usize, len: usize, out: &mut Vec<u8>) {
    let (head, words_end) = units(room, capacity);
    out.reserve(len);
    let mut i = 0;
    // SAFETY (all loops): as in `store_bytes`.
    while i < len.min(head) {
        out.push(unsafe { AtomicU8::from_ptr(room.add(i)) }.load(Ordering::Relaxed));
        i += 1;
    }
    while i < len && i < words_end {
        let word = unsafe { AtomicU64::from_ptr(room.add(i).cast()) }.load(Ordering::Relaxed);
        let n = (len - i).min(8);
        out.extend_from_slice(&word.to_ne_bytes()[..n]);
        i += 8;
    }
    while i < len {
        out.push(unsafe { AtomicU8::from_ptr(room.add(i)) }.load(Ordering::Relaxed));
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_key_value_revision_and_expiry() {
        for (key, value, expires) in [
            ("", &b""[..], NEVER),
            ("count:-100123456", b"10000000000000000", NEVER),
            ("k", b"v", 42),
            ("ü-key", &[7u8; 300][..], 9),
        ] {
            let ptr = EntryPtr::new(key, value, 5, expires);
            // SAFETY: just made; nothing else has it.
            let entry = unsafe { ptr.entry() };
            assert_eq!(entry.key(), key);
            assert_eq!(entry.value(), value);
            assert_eq!((entry.revision(), entry.expires()), (5, expires));
            // SAFETY: alive until freed below.
            let read = unsafe { ptr.pinned() }.read(0).unwrap();
            assert_eq!((read.value.as_slice(), read.revision), (value, 5));
            // SAFETY: nothing else has it.
            unsafe { ptr.free() };
        }
    }

    /// Overwrites in place at every length up to the room, at every alignment of the
    /// room, read back both ways; what does not fit says so.
    #[test]
    fn overwrites_in_place_read_back_both_ways() {
        for key_len in 0..9 {
            let key = "k".repeat(key_len);
            let ptr = EntryPtr::new(&key, b"0123456789abcdefg", 1, NEVER);
            // SAFETY: nothing else has it until freed.
            let entry = unsafe { ptr.entry() };
            let capacity = entry.raw().room().1;
            assert!(capacity >= 17);
            for len in 0..=capacity {
                let value: Vec<u8> = (0..len).map(|i| (i * 7 + key_len) as u8).collect();
                assert!(entry.fits(&value, NEVER));
                entry.overwrite(&value, 2 + len as u64, NEVER);
                assert_eq!(entry.value(), value);
                // SAFETY: alive.
                let read = unsafe { ptr.pinned() }.read(0).unwrap();
                assert_eq!(read.value, value);
                assert_eq!(read.revision, 2 + len as u64);
            }
            assert!(!entry.fits(&vec![0; capacity + 1], NEVER));
            assert!(!entry.fits(b"x", 10), "no room for an expiry");
            // SAFETY: alive; the copy is a new entry.
            let grown = unsafe { ptr.grown(b"x", 99, 10) };
            // SAFETY: nothing else has either.
            unsafe {
                assert_eq!(grown.entry().key(), key);
                assert_eq!(grown.entry().expires(), 10);
                assert!(grown.pinned().read(10).is_none(), "expired at 10");
                assert!(grown.pinned().read(9).is_some());
                grown.free();
                ptr.free();
            }
        }
    }
}
