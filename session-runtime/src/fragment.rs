//! The handler-facing access to one fragment: [`Fragment`] (what `s.field()` returns) and
//! the [`FragmentGuard`] its `.await` gives.

use std::{
    fmt,
    future::{Future, IntoFuture},
    ops::{Deref, DerefMut},
    pin::Pin,
};

use crate::{
    cell::{Cell, StateGuard},
    error::Error,
    spec::FragmentSpec,
};

/// A handler's access to one fragment, as `s.field()` returns it.
///
/// `.await` it for a guard that derefs to the value (loading it on first touch), or call
/// [`set`](Fragment::set) or [`delete`](Fragment::delete), which do not read.
///
/// Touching a fragment again while this task holds its guard is [`Error::Held`] at once
/// (rule S28): drop the guard first. Another task of the same update waits for the guard,
/// up to [`Config::lock_timeout`](crate::Config::lock_timeout).
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
        Ok(FragmentGuard {
            guard: self.cell.lock_loaded().await?,
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

/// Access to a loaded fragment value. Taking it mutably (`DerefMut`) marks the fragment
/// for a comparison at commit: it is written only if its value then differs from what was
/// loaded (rule S22), whatever the order its maps and sets serialize in.
pub struct FragmentGuard<'a, T> {
    guard: StateGuard<'a, T>,
    spec: &'a FragmentSpec<T>,
}

impl<T> Deref for FragmentGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match &self.guard.state.value {
            Some(value) => value,
            // `Cell::lock_loaded` makes the value before a guard exists.
            None => unreachable!("a fragment guard always has a value"),
        }
    }
}

impl<T> DerefMut for FragmentGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        let state = &mut *self.guard.state;
        state.before_change(self.spec);
        match &mut state.value {
            Some(value) => value,
            None => unreachable!("a fragment guard always has a value"),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for FragmentGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}
