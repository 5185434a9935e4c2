//! The error type of the session runtime.

use std::fmt;

use crate::{codec::CodecError, store::StoreError};

/// Everything that can go wrong with a session, as a value.
///
/// Each variant names the fragment, and where there is one, the storage key and the store,
/// so a log line says which data is affected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The fragment's key function gave no key for this update (an inline query has no
    /// chat, say), so the fragment is unavailable (rule S3). No I/O was done.
    #[error(
        "session fragment `{fragment}` is unavailable for this update: its key function gave no key"
    )]
    NoKey {
        /// The fragment.
        fragment: &'static str,
    },

    /// Reading the fragment failed (rule S14).
    #[error(
        "could not load session fragment `{fragment}` (key `{key}`) from store `{store}`: {source}"
    )]
    Load {
        /// The fragment.
        fragment: &'static str,
        /// The full storage key.
        key: String,
        /// The store's name.
        store: String,
        /// What the store said.
        #[source]
        source: StoreError,
    },

    /// The stored bytes do not decode as the fragment's type (rule S15). The stored value
    /// is left as it is.
    #[error(
        "stored value of session fragment `{fragment}` (key `{key}`, store `{store}`) does not decode: {source}"
    )]
    Decode {
        /// The fragment.
        fragment: &'static str,
        /// The full storage key.
        key: String,
        /// The store's name.
        store: String,
        /// What the codec said.
        #[source]
        source: CodecError,
    },

    /// The stored value was written by a newer version of the program: it has more
    /// migrations than this one knows (rule S19). The value is left as it is.
    #[error(
        "stored value of session fragment `{fragment}` (key `{key}`, store `{store}`) is at version {found}, newer than this program's {supported}; refusing to read or overwrite it"
    )]
    TooNew {
        /// The fragment.
        fragment: &'static str,
        /// The full storage key.
        key: String,
        /// The store's name.
        store: String,
        /// The stored version.
        found: u32,
        /// The newest version this program knows.
        supported: u32,
    },

    /// The fragment's value could not be encoded.
    #[error("session fragment `{fragment}` (key `{key}`) could not be encoded: {source}")]
    Encode {
        /// The fragment.
        fragment: &'static str,
        /// The full storage key.
        key: String,
        /// What the codec said.
        #[source]
        source: CodecError,
    },

    /// Saving failed for one or more fragments (rule S14); each failure is listed.
    #[error("could not save session: {}", DisplayList(.failures))]
    Save {
        /// One entry per fragment that failed.
        failures: Vec<SaveFailure>,
    },

    /// Another process changed the fragment since it was read, and the update could not
    /// be re-run (rule S17): retries were used up, the policy forbids them, or another
    /// fragment of the same update had already been committed.
    #[error(
        "session fragment `{fragment}` (key `{key}`, store `{store}`) was changed concurrently; gave up after {attempts} attempt(s){}",
        if .partially_committed.is_empty() { String::new() } else { format!(" (already committed: {})", .partially_committed.join(", ")) }
    )]
    Conflict {
        /// The fragment.
        fragment: &'static str,
        /// The full storage key.
        key: String,
        /// The store's name.
        store: String,
        /// How many times the update ran.
        attempts: u32,
        /// Fragments of the same update that were written before the conflict was seen.
        partially_committed: Vec<&'static str>,
    },

    /// Another update in this process holds the fragment's key while this update already
    /// holds another key; waiting could deadlock, so the update must be re-run. `run`
    /// does that by itself; with `open`/`commit`, retry the update.
    #[error(
        "session fragment `{fragment}` (key `{key}`) is in use by a concurrent update; re-run this update"
    )]
    Contended {
        /// The fragment.
        fragment: &'static str,
        /// The full storage key.
        key: String,
    },

    /// `commit` was called while a clone of the session handle (moved into a spawned task,
    /// say) was still alive. Nothing was written.
    #[error(
        "session committed while {clones} other handle(s) to it were still alive (a spawned task?); nothing was written"
    )]
    StillShared {
        /// How many other handles were alive.
        clones: usize,
    },

    /// An admin call named a fragment the session struct does not have.
    #[error("no session fragment named `{fragment}`; the fragments are: {}", .known.join(", "))]
    UnknownFragment {
        /// The name given.
        fragment: String,
        /// The fragments there are.
        known: &'static [&'static str],
    },

    /// `commit` was called on a session whose update must be re-run (see
    /// [`Error::Contended`]). Nothing was written.
    #[error("session must be re-run: fragment `{fragment}` was contended")]
    MustRerun {
        /// The contended fragment.
        fragment: &'static str,
    },
}

/// One fragment that could not be saved.
#[derive(Debug)]
pub struct SaveFailure {
    /// The fragment.
    pub fragment: &'static str,
    /// The full storage key (empty if the fragment had none).
    pub key: String,
    /// The store's name.
    pub store: String,
    /// Why.
    pub error: SaveError,
}

/// Why one fragment could not be saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SaveError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The value could not be encoded.
    #[error("encoding failed: {0}")]
    Encode(#[from] CodecError),
    /// The fragment was changed although it has no key for this update (strict mode).
    #[error("the fragment was changed but has no key for this update")]
    NoKey,
}

impl fmt::Display for SaveFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fragment `{}` (key `{}`, store `{}`): {}",
            self.fragment, self.key, self.store, self.error
        )
    }
}

struct DisplayList<'a>(&'a [SaveFailure]);

impl fmt::Display for DisplayList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, failure) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{failure}")?;
        }
        Ok(())
    }
}

impl Error {
    /// The fragment this error is about, if it is about one.
    pub fn fragment(&self) -> Option<&'static str> {
        match self {
            Error::NoKey { fragment }
            | Error::Load { fragment, .. }
            | Error::Decode { fragment, .. }
            | Error::TooNew { fragment, .. }
            | Error::Encode { fragment, .. }
            | Error::Conflict { fragment, .. }
            | Error::Contended { fragment, .. }
            | Error::MustRerun { fragment } => Some(fragment),
            Error::Save { failures } => failures.first().map(|f| f.fragment),
            Error::StillShared { .. } | Error::UnknownFragment { .. } => None,
        }
    }
}
