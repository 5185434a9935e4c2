//! What a fragment is: its description (built by the derive) and, once `Sessions` exist,
//! its store and its key locks.

use std::{sync::Arc, time::Duration};

use crate::{
    codec::{CodecError, DecodeFailure, write_version},
    context::SessionContext,
    lock::KeyLocks,
    store::StoreRef,
};

/// Appends the update's session key to the storage key being built; `false`: no key for
/// this update.
pub(crate) type KeyFn = Box<dyn Fn(&dyn SessionContext, &mut String) -> bool + Send + Sync>;
pub(crate) type InitialFn<T> = Box<dyn Fn() -> T + Send + Sync>;

/// The compile-time description of a fragment, built by the derive.
pub struct FragmentSpec<T> {
    pub(crate) name: &'static str,
    pub(crate) prefix: String,
    pub(crate) key: KeyFn,
    pub(crate) initial: InitialFn<T>,
    /// Appends the codec's bytes of a value to a buffer.
    pub(crate) encode: fn(&T, &mut Vec<u8>) -> Result<(), CodecError>,
    pub(crate) decode: fn(&[u8]) -> Result<T, CodecError>,
    /// The value as a codec-independent tree whose maps are sorted: equal trees are equal
    /// values, whatever the iteration order of `HashMap`s and `HashSet`s (rule S22).
    pub(crate) canonical: fn(&T) -> Option<serde_json::Value>,
    /// The type's `PartialEq`, where it has one (set by the derive).
    pub(crate) eq: Option<fn(&T, &T) -> bool>,
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

/// The value as a tree for comparisons (rule S22).
pub(crate) fn canonical<T: serde::Serialize>(value: &T) -> Option<serde_json::Value> {
    serde_json::to_value(value).ok()
}

/// A fragment's encoder: the codec's (appending to a buffer), and the comparison tree's.
pub type Encoders<T> = (
    fn(&T, &mut Vec<u8>) -> Result<(), CodecError>,
    fn(&T) -> Option<serde_json::Value>,
);

impl<T> FragmentSpec<T> {
    /// A fragment named `name` whose keys live under `prefix`.
    pub fn new(
        name: &'static str,
        prefix: impl Into<String>,
        key: KeyFn,
        initial: InitialFn<T>,
        (encode, canonical): Encoders<T>,
        decode: fn(&[u8]) -> Result<T, CodecError>,
    ) -> Self {
        Self {
            name,
            prefix: prefix.into(),
            key,
            initial,
            encode,
            decode,
            canonical,
            eq: None,
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

    /// Change detection may use the type's `PartialEq` (rule S22): a value equal to the
    /// loaded one by `eq` and by content (maps and sequences in any order) is unchanged.
    pub fn equality(mut self, eq: Option<fn(&T, &T) -> bool>) -> Self {
        self.eq = eq;
        self
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

    /// The codec's bytes for `value` (with the version header if there are migrations).
    pub(crate) fn encode_payload(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        let mut payload = Vec::new();
        self.encode_payload_into(value, &mut payload)?;
        Ok(payload)
    }

    /// [`encode_payload`](Self::encode_payload), appended to `out`.
    pub(crate) fn encode_payload_into(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        if let Some(m) = &self.migrations {
            write_version(m.version, out);
        }
        (self.encode)(value, out)
    }

    /// The value in a payload, and whether it was migrated from an older version.
    pub(crate) fn decode_payload(&self, bytes: &[u8]) -> Result<(T, bool), DecodeFailure> {
        match &self.migrations {
            Some(m) => (m.decode)(bytes),
            None => Ok(((self.decode)(bytes)?, false)),
        }
    }

    /// Whether `value`, encoded as `now`, is the value whose payload was `before` (rule
    /// S22). Equal bytes are equal values; bytes of different lengths, or that are not a
    /// permutation of each other, are taken as a change (map entries in another order are
    /// a permutation of the same bytes; for a codec where they are not, that costs a
    /// write, never a lost change). Other bytes are decoded and compared as values: equal
    /// up to the order of maps (a `HashMap` iterated in another order), or, for a type
    /// with `PartialEq`, equal by it and equal in content up to the order of sequences
    /// too (a `HashSet` iterated in another order).
    pub(crate) fn same_value(&self, before: &[u8], now: &[u8], value: &T) -> bool {
        if before == now {
            return true;
        }
        if before.len() != now.len() || !crate::change::same_bytes_in_any_order(before, now) {
            return false;
        }
        let Ok((old, false)) = self.decode_payload(before) else {
            return false;
        };
        let (Some(old_tree), Some(new_tree)) = ((self.canonical)(&old), (self.canonical)(value))
        else {
            return false;
        };
        if old_tree == new_tree {
            return true;
        }
        self.eq.is_some_and(|eq| eq(&old, value))
            && crate::change::equal_in_any_order(&old_tree, &new_tree)
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
