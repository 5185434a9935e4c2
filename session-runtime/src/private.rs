//! What the derive's generated code calls. Not a public API: it may change in any release.

pub use std::sync::Arc;

pub use crate::{
    builder::BuilderCore,
    cell::{Bound, BoundCells, Cell, ErasedCell},
    codec::{Codec, CodecError, DecodeFailure, split_version},
    config::Config,
    context::SessionContext,
    fragment::Fragment,
    keys::IntoSessionKey,
    lock::KeyLocks,
    session::{Core, MultiSession, Sessions, key_of},
    spec::{FragmentShared, FragmentSpec},
    store::StoreRef,
    update::{CellKey, KeysView, UpdateCtx, UpdateRef},
};

use crate::{
    spec::{InitialFn, KeyFn},
    stores::MemoryStore,
};

/// A key function from any function or closure of the right shape.
pub fn key_fn<F, K>(f: F) -> KeyFn
where
    F: Fn(&dyn SessionContext) -> K + Send + Sync + 'static,
    K: IntoSessionKey,
{
    // Every key is written into the storage key (`IntoSessionKey::push_session_key`:
    // integers and slices without a string of their own). The built-in per-chat,
    // per-user and per-user-in-chat functions return a `String` (their public shape),
    // so they are recognized by type (a function item's own type: equal type ids, the
    // same function) and their ids written directly.
    if is_fn::<F, _>(&crate::keys::chat) {
        return Box::new(|ctx, out| crate::keys::push_ids(out, &[ctx.chat_id()]));
    }
    if is_fn::<F, _>(&crate::keys::user) {
        return Box::new(|ctx, out| crate::keys::push_ids(out, &[ctx.user_id()]));
    }
    if is_fn::<F, _>(&crate::keys::user_in_chat) {
        return Box::new(|ctx, out| crate::keys::push_ids(out, &[ctx.chat_id(), ctx.user_id()]));
    }
    Box::new(move |ctx, out| f(ctx).push_session_key(out))
}

/// Whether `F` is the type of `g` (for a function item: whether it is that function).
fn is_fn<F: 'static, G: 'static>(_: &G) -> bool {
    std::any::TypeId::of::<F>() == std::any::TypeId::of::<G>()
}

/// An initial-value function returning `T`.
pub fn initial_fn<T, F>(f: F) -> InitialFn<T>
where
    F: Fn() -> T + Send + Sync + 'static,
{
    Box::new(f)
}

/// Checks that a field type can be a fragment.
pub const fn assert_fragment<T>()
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
}

/// The encoder of codec `C` for `T`, and its comparison tree (rule S22).
pub fn encoder<T: serde::Serialize, C: Codec>() -> crate::spec::Encoders<T> {
    (C::encode_into::<T>, crate::spec::canonical::<T>)
}

/// The decoder of codec `C` for `T`.
pub fn decoder<T: serde::de::DeserializeOwned, C: Codec>() -> fn(&[u8]) -> Result<T, CodecError> {
    C::decode::<T>
}

/// A fragment with its store, as `Sessions` holds it.
pub fn shared<T>(spec: FragmentSpec<T>, store: StoreRef) -> Arc<FragmentShared<T>> {
    Arc::new(FragmentShared::new(spec, store))
}

/// The next store of the builder's list (there is one per fragment: the typestate makes
/// sure of it; the memory store is only a fallback that cannot be reached).
pub fn next_store(stores: &mut std::vec::IntoIter<StoreRef>) -> StoreRef {
    stores
        .next()
        .unwrap_or_else(|| StoreRef::new(MemoryStore::new()))
}

/// Decodes `bytes` as the input type of migration `step`.
pub fn decode_input<C: Codec, I: serde::de::DeserializeOwned, O>(
    _step: fn(I) -> O,
    bytes: &[u8],
) -> Result<I, DecodeFailure> {
    Ok(C::decode::<I>(bytes)?)
}

/// Decodes the current version.
pub fn decode_current<C: Codec, T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, DecodeFailure> {
    Ok(C::decode::<T>(bytes)?)
}

/// Checks that a `ttl` expression is a `Duration`.
pub fn ttl_value(ttl: std::time::Duration) -> std::time::Duration {
    ttl
}

/// Finds a type's `PartialEq` where it has one (autoref specialization: the derive calls
/// `(&&&EqProbe::<T>::new()).eq_fn()` with both traits in scope).
pub struct EqProbe<T>(::core::marker::PhantomData<fn() -> T>);

impl<T> EqProbe<T> {
    /// The probe of `T`.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        EqProbe(::core::marker::PhantomData)
    }
}

/// The `PartialEq` of a type that has one.
pub trait ViaPartialEq<T> {
    /// `Some(eq)`.
    fn eq_fn(&self) -> Option<fn(&T, &T) -> bool>;
}

impl<T: PartialEq> ViaPartialEq<T> for &&EqProbe<T> {
    fn eq_fn(&self) -> Option<fn(&T, &T) -> bool> {
        Some(<T as PartialEq>::eq)
    }
}

/// No `PartialEq`: values are compared by content alone.
pub trait NoPartialEq<T> {
    /// `None`.
    fn eq_fn(&self) -> Option<fn(&T, &T) -> bool>;
}

impl<T> NoPartialEq<T> for &EqProbe<T> {
    fn eq_fn(&self) -> Option<fn(&T, &T) -> bool> {
        None
    }
}

/// A fragment of a session builder that has no store yet (the builder's typestate).
#[derive(Debug)]
pub enum NoStore {}

/// A fragment of a session builder that has its store (or a default store was named).
#[derive(Debug)]
pub enum HasStore {}

/// The state of a builder fragment for which `build()` can choose a store: its own, or
/// the default store (`D` = [`HasStore`]).
#[diagnostic::on_unimplemented(
    message = "a fragment of this session has no store, and no default store was named",
    label = "`build()` needs a store for every fragment",
    note = "give each fragment its store with its setter (`.field(store)`), or name one for the rest with `.default_store(store)`; the builder's type marks fragments without a store `NoStore`, in field order"
)]
pub trait StoreFor<D> {}

impl<D> StoreFor<D> for HasStore {}
impl StoreFor<HasStore> for NoStore {}

/// What the type of a fragment must be: `Serialize` and `Deserialize`, checked as one bound
/// so that a type with neither gets one error, on the field's type (rule: one error per
/// mistake). The derive calls `<T as FragmentData<_>>::encoder::<C>()` and friends; `M` is
/// inferred ([`ViaSerde`] is the only impl a type can satisfy: the other one exists so that
/// rustc checks the bounds before it picks an impl, and reports this trait, not its leaves).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a session fragment: it must implement `serde::Serialize` and `serde::Deserialize`",
    label = "a fragment is stored: this type must implement `Serialize` and `Deserialize`",
    note = "for a type of this crate, add `#[derive(serde::Serialize, serde::Deserialize)]` to it; for a type of another crate, check whether that crate has a `serde` feature"
)]
pub trait FragmentData<M>: Sized {
    /// The encoder of codec `C` for this type, and its comparison tree (rule S22).
    fn encoder<C: Codec>() -> crate::spec::Encoders<Self>;
    /// The decoder of codec `C` for this type.
    fn decoder<C: Codec>() -> fn(&[u8]) -> Result<Self, CodecError>;
    /// Decodes the current version (of a fragment with migrations).
    fn decode_current<C: Codec>(bytes: &[u8]) -> Result<Self, DecodeFailure>;
}

/// The [`FragmentData`] of every `Serialize + DeserializeOwned` type.
#[derive(Debug)]
pub enum ViaSerde {}

/// The [`FragmentData`] impl no type has (see there).
#[derive(Debug)]
pub enum NotAFragment {}

mod sealed {
    /// Implemented by no type.
    pub trait Never {}
}

impl<T: serde::Serialize + serde::de::DeserializeOwned> FragmentData<ViaSerde> for T {
    fn encoder<C: Codec>() -> crate::spec::Encoders<T> {
        (C::encode_into::<T>, crate::spec::canonical::<T>)
    }

    fn decoder<C: Codec>() -> fn(&[u8]) -> Result<T, CodecError> {
        C::decode::<T>
    }

    fn decode_current<C: Codec>(bytes: &[u8]) -> Result<T, DecodeFailure> {
        Ok(C::decode::<T>(bytes)?)
    }
}

impl<T: sealed::Never> FragmentData<NotAFragment> for T {
    fn encoder<C: Codec>() -> crate::spec::Encoders<T> {
        unreachable!("no type implements `Never`")
    }

    fn decoder<C: Codec>() -> fn(&[u8]) -> Result<T, CodecError> {
        unreachable!("no type implements `Never`")
    }

    fn decode_current<C: Codec>(_bytes: &[u8]) -> Result<T, DecodeFailure> {
        unreachable!("no type implements `Never`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChatContext, keys};

    /// What a key function appends to a storage key of prefix `p:`.
    fn storage_key(key: &KeyFn, ctx: &ChatContext) -> Option<String> {
        let mut out = String::from("p:");
        key(ctx, &mut out).then_some(out)
    }

    #[test]
    fn built_in_keys_written_in_place_are_the_functions_keys() {
        let contexts = [
            ChatContext::new(-100).with_user(7),
            ChatContext::new(i64::MIN).with_user(i64::MAX),
            ChatContext::new(0).with_user(0),
            ChatContext::new(-1_001_234_567_890),
            ChatContext::user_only(42),
        ];
        type Function = fn(&dyn SessionContext) -> Option<String>;
        let built_in: [(&str, Function, KeyFn); 3] = [
            ("chat", keys::chat, key_fn(keys::chat)),
            ("user", keys::user, key_fn(keys::user)),
            (
                "user_in_chat",
                keys::user_in_chat,
                key_fn(keys::user_in_chat),
            ),
        ];
        for (name, function, in_place) in &built_in {
            // A closure is another type: the general path, through the function's string.
            let function = *function;
            let general = key_fn(move |ctx: &dyn SessionContext| function(ctx));
            for ctx in &contexts {
                let expected = function(ctx).map(|key| format!("p:{key}"));
                assert_eq!(storage_key(in_place, ctx), expected, "{name} of {ctx:?}");
                assert_eq!(storage_key(&general, ctx), expected, "{name} of {ctx:?}");
            }
        }
        // The in-place path is chosen by the function's type.
        fn same<F: 'static, G: 'static>(_: &F, g: &G) -> bool {
            is_fn::<F, G>(g)
        }
        assert!(same(&keys::chat, &keys::chat));
        assert!(!same(&keys::user, &keys::chat));
        assert!(!same(
            &|ctx: &dyn SessionContext| keys::chat(ctx),
            &keys::chat
        ));
        // Other functions keep their own keys.
        let thread = key_fn(keys::chat_thread);
        assert_eq!(
            storage_key(&thread, &ChatContext::new(-100).with_thread(5)).as_deref(),
            Some("p:-100:5")
        );
        let none = key_fn(|_: &dyn SessionContext| None::<String>);
        assert_eq!(storage_key(&none, &contexts[0]), None);
        // Every key type a key function may return writes what its string would be.
        for ctx in &contexts {
            let cases: [(KeyFn, Option<String>); 6] = [
                (
                    key_fn(|ctx: &dyn SessionContext| ctx.user_id()),
                    ctx.user_id().into_session_key(),
                ),
                (
                    key_fn(|ctx: &dyn SessionContext| ctx.chat_id().unwrap_or(-1)),
                    ctx.chat_id().unwrap_or(-1).into_session_key(),
                ),
                (
                    key_fn(|_: &dyn SessionContext| "a \"b\"\0c"),
                    Some("a \"b\"\0c".into()),
                ),
                (
                    key_fn(|ctx: &dyn SessionContext| ctx.user_id().map(|_| "sender")),
                    ctx.user_id().map(|_| "sender".into()),
                ),
                (
                    key_fn(|_: &dyn SessionContext| "k".repeat(10_000)),
                    Some("k".repeat(10_000)),
                ),
                (
                    key_fn(|ctx: &dyn SessionContext| ctx.chat_id().map(|c| format!("c{c}"))),
                    ctx.chat_id().map(|c| format!("c{c}")),
                ),
            ];
            for (n, (key, expected)) in cases.iter().enumerate() {
                let expected = expected.as_ref().map(|key| format!("p:{key}"));
                assert_eq!(storage_key(key, ctx), expected, "case {n} of {ctx:?}");
            }
        }
    }
}
