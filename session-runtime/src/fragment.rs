//! One fragment of a session: its description, and its lazily loaded per-update cell.

use std::{
    fmt,
    future::{Future, IntoFuture},
    ops::{Deref, DerefMut},
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::OnceCell;

use crate::{
    codec::{CodecError, DecodeFailure, with_version},
    context::{ChatContext, SessionContext},
    error::{Error, SaveError, SaveFailure},
    lock::{HeldKey, KeyLocks, UpdateLocks},
    session::{Config, OnDecodeError},
    stats::Counters,
    store::{Expect, Record, StoreError, StoreRef, Write},
};

pub(crate) type KeyFn = Box<dyn Fn(&dyn SessionContext) -> Option<String> + Send + Sync>;
pub(crate) type InitialFn<T> = Box<dyn Fn() -> T + Send + Sync>;

/// The compile-time description of a fragment, built by the derive.
pub struct FragmentSpec<T> {
    pub(crate) name: &'static str,
    pub(crate) prefix: String,
    pub(crate) key: KeyFn,
    pub(crate) initial: InitialFn<T>,
    pub(crate) encode: fn(&T) -> Result<Vec<u8>, CodecError>,
    pub(crate) decode: fn(&[u8]) -> Result<T, CodecError>,
    pub(crate) is_none: Option<fn(&T) -> bool>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) migrations: Option<Migrations<T>>,
}

/// Decodes a stored value at any known version; the flag says it was migrated.
pub type VersionedDecode<T> = fn(&[u8]) -> Result<(T, bool), DecodeFailure>;

/// How a fragment with migrations reads older values (rule S19).
pub struct Migrations<T> {
    /// The current version: the number of migrations.
    pub version: u32,
    /// Decodes a stored value at any version up to `version`, migrating it step by step;
    /// the flag says whether it was migrated (and so must be written back).
    pub decode: VersionedDecode<T>,
}

impl<T> FragmentSpec<T> {
    /// A fragment named `name` whose keys live under `prefix`.
    pub fn new(
        name: &'static str,
        prefix: impl Into<String>,
        key: KeyFn,
        initial: InitialFn<T>,
        encode: fn(&T) -> Result<Vec<u8>, CodecError>,
        decode: fn(&[u8]) -> Result<T, CodecError>,
    ) -> Self {
        Self {
            name,
            prefix: prefix.into(),
            key,
            initial,
            encode,
            decode,
            is_none: None,
            ttl: None,
            migrations: None,
        }
    }

    /// Values carry a version and older ones are migrated on read and written back.
    pub fn migrations(mut self, version: u32, decode: VersionedDecode<T>) -> Self {
        self.migrations = Some(Migrations { version, decode });
        self
    }

    /// The bytes to store for `value` (with the version header if there are migrations).
    pub(crate) fn encode_stored(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        let payload = (self.encode)(value)?;
        Ok(match &self.migrations {
            Some(m) => with_version(m.version, &payload),
            None => payload,
        })
    }

    /// The value stored in `bytes`, and whether it was migrated from an older version.
    pub(crate) fn decode_stored(&self, bytes: &[u8]) -> Result<(T, bool), DecodeFailure> {
        match &self.migrations {
            Some(m) => (m.decode)(bytes),
            None => Ok(((self.decode)(bytes)?, false)),
        }
    }

    /// Values for which `is_none` holds are deleted rather than written (`Option` fields).
    pub fn none_deletes(mut self, is_none: fn(&T) -> bool) -> Self {
        self.is_none = Some(is_none);
        self
    }

    /// Values expire `ttl` after their last write.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// A fragment as a running `Sessions` holds it: its description, its store, its locks.
pub struct FragmentShared<T> {
    pub(crate) spec: FragmentSpec<T>,
    pub(crate) store: StoreRef,
    pub(crate) locks: Arc<KeyLocks>,
    pub(crate) store_name: String,
}

impl<T> FragmentShared<T> {
    pub(crate) fn new(spec: FragmentSpec<T>, store: StoreRef) -> Self {
        let store_name = store.as_dyn().name().to_owned();
        Self {
            spec,
            store,
            locks: Arc::default(),
            store_name,
        }
    }
}

/// What one update shares among its cells: its locks, its config, what went wrong.
pub struct UpdateCtx {
    /// The update's identifiers, for the key functions (run on first need: an update
    /// that never touches a fragment never formats its key).
    pub(crate) ctx: ChatContext,
    pub(crate) locks: Arc<UpdateLocks>,
    pub(crate) config: Arc<Config>,
    pub(crate) counters: Arc<Counters>,
    /// Keys taken in advance (strict mode, re-runs), by fragment index.
    pub(crate) preheld: Mutex<Vec<Option<HeldKey>>>,
    /// Fragments that could not be locked without risking a deadlock, by index.
    pub(crate) contended: Mutex<Vec<(usize, &'static str)>>,
    /// Whether `contended` is non-empty (checked on every update without locking).
    any_contended: std::sync::atomic::AtomicBool,
}

impl UpdateCtx {
    pub(crate) fn new(config: Arc<Config>, counters: Arc<Counters>, ctx: ChatContext) -> Self {
        // `preheld` grows on first use: most updates never pre-take keys.
        Self {
            ctx,
            locks: Arc::default(),
            config,
            counters,
            preheld: Mutex::new(Vec::new()),
            any_contended: std::sync::atomic::AtomicBool::new(false),
            contended: Mutex::default(),
        }
    }

    fn take_preheld(&self, index: usize) -> Option<HeldKey> {
        let mut preheld = self.preheld.lock().unwrap_or_else(|p| p.into_inner());
        preheld.get_mut(index).and_then(Option::take)
    }

    pub(crate) fn put_preheld(&self, index: usize, held: HeldKey) {
        let mut preheld = self.preheld.lock().unwrap_or_else(|p| p.into_inner());
        if preheld.len() <= index {
            preheld.resize_with(index + 1, || None);
        }
        preheld[index] = Some(held);
    }

    fn mark_contended(&self, index: usize, fragment: &'static str) {
        let mut contended = self.contended.lock().unwrap_or_else(|p| p.into_inner());
        contended.push((index, fragment));
        self.any_contended
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub(crate) fn contended(&self) -> Vec<(usize, &'static str)> {
        if !self
            .any_contended
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Vec::new();
        }
        self.contended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) async fn timed<F, R>(&self, op: F) -> Result<R, StoreError>
    where
        F: Future<Output = Result<R, StoreError>>,
    {
        match self.config.op_timeout {
            Some(limit) => {
                // An operation that completes on its first poll (an in-process store)
                // needs no timer.
                let mut op = std::pin::pin!(op);
                let first =
                    std::future::poll_fn(|cx| std::task::Poll::Ready(op.as_mut().poll(cx))).await;
                if let std::task::Poll::Ready(result) = first {
                    return result;
                }
                tokio::time::timeout(limit, op)
                    .await
                    .unwrap_or(Err(StoreError::Timeout(limit)))
            }
            None => op.await,
        }
    }
}

/// What the cell knows about the stored value.
enum Loaded {
    /// Not read: the handler assigned or deleted without reading (rules S8, S9).
    NotRead,
    /// Read, and missing. `baseline` is the encoded initial value, taken before the first
    /// change, so an initial value that ends up unchanged is not written (S5).
    Absent { baseline: Option<Vec<u8>> },
    /// Read, and present.
    Present { bytes: Vec<u8>, revision: u64 },
}

struct State<T> {
    value: T,
    loaded: Loaded,
    changed: bool,
    deleted: bool,
    /// Strict mode changed a fragment that has no key for this update.
    orphan_change: bool,
}

impl<T> State<T> {
    fn before_change(&mut self, spec: &FragmentSpec<T>) {
        if !self.changed {
            if let Loaded::Absent { baseline } = &mut self.loaded
                && baseline.is_none()
            {
                *baseline = spec.encode_stored(&self.value).ok();
            }
            self.changed = true;
        }
        self.deleted = false;
    }
}

struct Slot<T> {
    _held: Option<HeldKey>,
    state: tokio::sync::Mutex<State<T>>,
}

/// The per-update cell of one fragment: loaded at most once, on first touch.
pub struct Cell<T> {
    shared: Arc<FragmentShared<T>>,
    index: usize,
    /// The session key and the storage key (`None`: no key for this update).
    keys: std::sync::OnceLock<Option<(String, String)>>,
    update: Arc<UpdateCtx>,
    /// Boxed: an untouched fragment costs a pointer, not its value's size, per update.
    slot: OnceCell<Box<Slot<T>>>,
}

impl<T: Send + 'static> Cell<T> {
    /// The cell of fragment number `index` for the update `ctx`.
    pub fn new(shared: &Arc<FragmentShared<T>>, index: usize, update: &Arc<UpdateCtx>) -> Self {
        Self {
            shared: shared.clone(),
            index,
            keys: std::sync::OnceLock::new(),
            update: update.clone(),
            slot: OnceCell::new(),
        }
    }

    fn keys(&self) -> Option<&(String, String)> {
        self.keys
            .get_or_init(|| {
                let session_key = (self.shared.spec.key)(&self.update.ctx)?;
                let mut storage_key =
                    String::with_capacity(self.shared.spec.prefix.len() + session_key.len());
                storage_key.push_str(&self.shared.spec.prefix);
                storage_key.push_str(&session_key);
                Some((session_key, storage_key))
            })
            .as_ref()
    }

    fn session_key_str(&self) -> Option<&str> {
        self.keys().map(|(session, _)| session.as_str())
    }

    fn storage_key_str(&self) -> Option<&str> {
        self.keys().map(|(_, storage)| storage.as_str())
    }

    fn name(&self) -> &'static str {
        self.shared.spec.name
    }

    fn key(&self) -> Result<&str, Error> {
        self.storage_key_str().ok_or(Error::NoKey {
            fragment: self.name(),
        })
    }

    async fn hold(&self, key: &str) -> Result<HeldKey, Error> {
        if let Some(held) = self.update.take_preheld(self.index) {
            return Ok(held);
        }
        match self.update.locks.acquire(&self.shared.locks, key).await {
            Some(held) => Ok(held),
            None => {
                self.update.mark_contended(self.index, self.name());
                Err(Error::Contended {
                    fragment: self.name(),
                    key: key.to_owned(),
                })
            }
        }
    }

    fn state_from(&self, key: &str, record: Option<Record>) -> Result<State<T>, Error> {
        let spec = &self.shared.spec;
        let mut changed = false;
        let (value, loaded) = match record {
            None => ((spec.initial)(), Loaded::Absent { baseline: None }),
            Some(Record {
                value: bytes,
                revision,
            }) => match spec.decode_stored(&bytes) {
                Ok((value, migrated)) => {
                    // A migrated value is written back at commit (S19).
                    changed = migrated;
                    (value, Loaded::Present { bytes, revision })
                }
                Err(DecodeFailure::TooNew { found, supported }) => {
                    return Err(Error::TooNew {
                        fragment: spec.name,
                        key: key.to_owned(),
                        store: self.shared.store_name.clone(),
                        found,
                        supported,
                    });
                }
                Err(DecodeFailure::Codec(source)) => {
                    if self.update.config.on_decode_error != OnDecodeError::Reset {
                        return Err(Error::Decode {
                            fragment: spec.name,
                            key: key.to_owned(),
                            store: self.shared.store_name.clone(),
                            source,
                        });
                    }
                    tracing::warn!(
                        fragment = spec.name,
                        key,
                        store = %self.shared.store_name,
                        error = %source,
                        "stored session value does not decode; reset to the initial value (OnDecodeError::Reset)"
                    );
                    // The bad bytes are replaced by the initial value at commit.
                    changed = true;
                    ((spec.initial)(), Loaded::Present { bytes, revision })
                }
            },
        };
        Ok(State {
            value,
            loaded,
            changed,
            deleted: false,
            orphan_change: false,
        })
    }

    fn slot_of(held: HeldKey, state: State<T>) -> Box<Slot<T>> {
        Box::new(Slot {
            _held: Some(held),
            state: tokio::sync::Mutex::new(state),
        })
    }

    async fn load(&self) -> Result<Box<Slot<T>>, Error> {
        let key = self.key()?;
        let held = self.hold(key).await?;
        let started = tracing::enabled!(tracing::Level::DEBUG).then(std::time::Instant::now);
        let span = tracing::debug_span!(
            "multisession.load",
            fragment = self.name(),
            store = %self.shared.store_name
        );
        let result = tracing::Instrument::instrument(
            self.update.timed(self.shared.store.as_dyn().read(key)),
            span,
        )
        .await
        .map_err(|source| Error::Load {
            fragment: self.name(),
            key: key.to_owned(),
            store: self.shared.store_name.clone(),
            source,
        })
        .and_then(|record| {
            let found = record.is_some();
            self.state_from(key, record).map(|state| (state, found))
        });
        let counters = &self.update.counters;
        Counters::add(&counters.reads, 1);
        let shown = self.update.config.shown_key(key);
        match &result {
            Ok((_, found)) => tracing::debug!(
                fragment = self.name(),
                key = %shown,
                store = %self.shared.store_name,
                found,
                elapsed_us = started.map_or(0, |s| s.elapsed().as_micros() as u64),
                "session fragment loaded"
            ),
            Err(error) => {
                Counters::add(&counters.errors, 1);
                tracing::warn!(fragment = self.name(), key = %shown, store = %self.shared.store_name, %error, "session fragment load failed");
            }
        }
        let (state, _) = result?;
        Ok(Self::slot_of(held, state))
    }

    async fn slot(&self) -> Result<&Slot<T>, Error> {
        self.slot
            .get_or_try_init(|| self.load())
            .await
            .map(|slot| &**slot)
    }

    /// Initializes the cell without reading, from `make` (rules S8, S9); `false` if the
    /// cell was already initialized.
    async fn init_blind(&self, make: impl FnOnce() -> State<T>) -> Result<bool, Error> {
        let mut fresh = false;
        self.slot
            .get_or_try_init(|| async {
                let key = self.key()?;
                let held = self.hold(key).await?;
                fresh = true;
                Ok::<_, Error>(Self::slot_of(held, make()))
            })
            .await?;
        Ok(fresh)
    }

    async fn set(&self, value: T) -> Result<(), Error> {
        let mut pending = Some(value);
        let fresh = self
            .init_blind(|| State {
                value: pending
                    .take()
                    .unwrap_or_else(|| (self.shared.spec.initial)()),
                loaded: Loaded::NotRead,
                changed: true,
                deleted: false,
                orphan_change: false,
            })
            .await?;
        if let (false, Some(value), Some(slot)) = (fresh, pending, self.slot.get()) {
            let mut state = slot.state.lock().await;
            state.before_change(&self.shared.spec);
            state.value = value;
        }
        Ok(())
    }

    async fn delete(&self) -> Result<(), Error> {
        let fresh = self
            .init_blind(|| State {
                value: (self.shared.spec.initial)(),
                loaded: Loaded::NotRead,
                changed: false,
                deleted: true,
                orphan_change: false,
            })
            .await?;
        if let (false, Some(slot)) = (fresh, self.slot.get()) {
            let mut state = slot.state.lock().await;
            state.value = (self.shared.spec.initial)();
            state.changed = false;
            state.deleted = true;
        }
        Ok(())
    }

    /// Strict mode: moves the loaded value out (an unavailable fragment gives its initial).
    pub fn take_value(&self) -> T {
        match self.slot.get() {
            Some(slot) => match slot.state.try_lock() {
                Ok(mut state) => std::mem::replace(&mut state.value, (self.shared.spec.initial)()),
                Err(_) => (self.shared.spec.initial)(),
            },
            None => (self.shared.spec.initial)(),
        }
    }

    /// Strict mode: puts the (possibly changed) value back, to be saved if it changed.
    pub fn put_value(&self, value: T) {
        let spec = &self.shared.spec;
        match self.slot.get().map(|slot| slot.state.try_lock()) {
            Some(Ok(mut state)) => {
                state.before_change(spec);
                state.value = value;
            }
            Some(Err(_)) => {}
            None => {
                // No key for this update: a change cannot be saved, so report it.
                let initial = (spec.initial)();
                if (spec.encode)(&initial).ok() != (spec.encode)(&value).ok() {
                    let state = State {
                        value,
                        loaded: Loaded::NotRead,
                        changed: false,
                        deleted: false,
                        orphan_change: true,
                    };
                    let _ = self.slot.set(Box::new(Slot {
                        _held: None,
                        state: tokio::sync::Mutex::new(state),
                    }));
                }
            }
        }
    }
}

/// What the session needs of a cell, whatever its value type.
pub trait ErasedCell: Send + Sync {
    /// The fragment's position in the struct.
    fn index(&self) -> usize;
    /// The fragment's name.
    fn fragment(&self) -> &'static str;
    /// The full storage key, if the update has one for this fragment.
    fn storage_key(&self) -> Option<&str>;
    /// The fragment's store.
    fn store(&self) -> &StoreRef;
    #[doc(hidden)]
    fn key_locks(&self) -> &Arc<KeyLocks>;
    /// The fragment's time to live.
    fn ttl(&self) -> Option<Duration>;
    /// The namespace of the fragment's keys.
    fn prefix(&self) -> &str;
    /// Whether the cell holds a value (it was touched, or strict mode loaded it).
    fn is_loaded(&self) -> bool;
    #[doc(hidden)]
    fn fill(&self, record: Option<Record>) -> Result<(), Error>;
    #[doc(hidden)]
    fn plan(&self) -> Result<Option<Write>, SaveFailure>;
}

impl<T: Send + 'static> ErasedCell for Cell<T> {
    fn index(&self) -> usize {
        self.index
    }

    fn fragment(&self) -> &'static str {
        self.name()
    }

    fn storage_key(&self) -> Option<&str> {
        self.storage_key_str()
    }

    fn store(&self) -> &StoreRef {
        &self.shared.store
    }

    fn key_locks(&self) -> &Arc<KeyLocks> {
        &self.shared.locks
    }

    fn ttl(&self) -> Option<Duration> {
        self.shared.spec.ttl
    }

    fn prefix(&self) -> &str {
        &self.shared.spec.prefix
    }

    fn is_loaded(&self) -> bool {
        self.slot.initialized()
    }

    fn fill(&self, record: Option<Record>) -> Result<(), Error> {
        let key = self.key()?;
        let held = self.update.take_preheld(self.index);
        let state = self.state_from(key, record)?;
        let _ = self.slot.set(Box::new(Slot {
            _held: held,
            state: tokio::sync::Mutex::new(state),
        }));
        Ok(())
    }

    fn plan(&self) -> Result<Option<Write>, SaveFailure> {
        let Some(slot) = self.slot.get() else {
            return Ok(None);
        };
        let spec = &self.shared.spec;
        let failure = |error: SaveError| SaveFailure {
            fragment: spec.name,
            key: self.storage_key_str().unwrap_or_default().to_owned(),
            store: self.shared.store_name.clone(),
            error,
        };
        // The session is committed only when no other handle is alive, so no guard exists.
        let Ok(state) = slot.state.try_lock() else {
            return Err(failure(SaveError::Store(StoreError::backend(
                "a guard of this fragment is still held",
            ))));
        };
        if state.orphan_change {
            return Err(failure(SaveError::NoKey));
        }
        let Some(key) = self.storage_key_str().map(str::to_owned) else {
            return Ok(None);
        };
        let is_none = spec.is_none.is_some_and(|is_none| is_none(&state.value));
        if state.deleted || (state.changed && is_none) {
            let expect = match &state.loaded {
                Loaded::Absent { .. } => return Ok(None),
                Loaded::NotRead => Expect::Any,
                Loaded::Present { revision, .. } => Expect::Revision(*revision),
            };
            return Ok(Some(Write::Delete { key, expect }));
        }
        if !state.changed {
            return Ok(None);
        }
        let bytes = spec
            .encode_stored(&state.value)
            .map_err(|e| failure(SaveError::Encode(e)))?;
        let expect = match &state.loaded {
            Loaded::NotRead => Expect::Any,
            Loaded::Absent { baseline } if baseline.as_deref() == Some(&bytes[..]) => {
                Counters::add(&self.update.counters.skipped_writes, 1);
                return Ok(None);
            }
            Loaded::Absent { .. } => Expect::Absent,
            Loaded::Present { bytes: old, .. } if *old == bytes => {
                Counters::add(&self.update.counters.skipped_writes, 1);
                return Ok(None);
            }
            Loaded::Present { revision, .. } => Expect::Revision(*revision),
        };
        Ok(Some(Write::Put {
            key,
            value: bytes,
            ttl: spec.ttl,
            expect,
        }))
    }
}

/// A handler's access to one fragment, as `s.field()` returns it.
///
/// `.await` it for a guard that derefs to the value (loading it on first touch), or call
/// [`set`](Fragment::set) or [`delete`](Fragment::delete), which do not read.
///
/// Do not hold a guard of a fragment while awaiting another access to the *same* fragment
/// in the same task: the second access waits for the first guard.
pub struct Fragment<'a, T> {
    cell: &'a Cell<T>,
}

impl<'a, T: Send + 'static> Fragment<'a, T> {
    /// The access to `cell`.
    pub fn new(cell: &'a Cell<T>) -> Self {
        Self { cell }
    }

    /// Loads the value (once per update) and locks it for this task while the guard lives.
    pub async fn get(self) -> Result<FragmentGuard<'a, T>, Error> {
        let slot = self.cell.slot().await?;
        Ok(FragmentGuard {
            state: slot.state.lock().await,
            spec: &self.cell.shared.spec,
        })
    }

    /// Replaces the value without reading it; it is written at commit (rule S8).
    pub async fn set(self, value: T) -> Result<(), Error> {
        self.cell.set(value).await
    }

    /// Deletes the value without reading it; one delete at commit (rule S9). Later reads
    /// in this update see the initial value.
    pub async fn delete(self) -> Result<(), Error> {
        self.cell.delete().await
    }

    /// The session key of this fragment for this update (without the namespace), like
    /// grammY's `ctx.sessionKey`; `None` if the fragment is unavailable.
    pub fn key(&self) -> Option<&'a str> {
        self.cell.session_key_str()
    }

    /// The full storage key (namespace and key).
    pub fn storage_key(&self) -> Option<&'a str> {
        self.cell.storage_key_str()
    }

    /// Whether the fragment has a key for this update (rule S3).
    pub fn is_available(&self) -> bool {
        self.cell.storage_key_str().is_some()
    }

    /// The fragment's name (the field name).
    pub fn name(&self) -> &'static str {
        self.cell.name()
    }
}

impl<'a, T: Send + 'static> IntoFuture for Fragment<'a, T> {
    type Output = Result<FragmentGuard<'a, T>, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.get())
    }
}

/// Access to a loaded fragment value. Changing it through `DerefMut` marks the fragment
/// for a write at commit; it is written only if its bytes differ from what was loaded.
pub struct FragmentGuard<'a, T> {
    state: tokio::sync::MutexGuard<'a, State<T>>,
    spec: &'a FragmentSpec<T>,
}

impl<T> Deref for FragmentGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.state.value
    }
}

impl<T> DerefMut for FragmentGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.state.before_change(self.spec);
        &mut self.state.value
    }
}

impl<T: fmt::Debug> fmt::Debug for FragmentGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.state.value.fmt(f)
    }
}
