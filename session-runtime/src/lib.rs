//! The runtime of [multisession](https://docs.rs/multisession): stores, codecs, keys and
//! the lazy per-fragment session cells. Use it through the `multisession` crate.

#![deny(missing_docs)]

pub mod codec;
pub mod context;
pub mod error;
mod fragment;
pub mod keys;
mod lock;
mod session;
mod stats;
pub mod store;
pub mod stores;
pub mod telegram;
#[cfg(feature = "teloxide")]
pub mod teloxide;
#[cfg(feature = "testing")]
pub mod testing;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use async_trait::async_trait;
pub use context::{ChatContext, ChatMigration, SessionContext};
pub use error::{Error, SaveError, SaveFailure};
pub use fragment::{Fragment, FragmentGuard};
pub use session::{
    Config, Loaded, MultiSession, OnConflict, OnDecodeError, OnHandlerError, Session, Sessions,
};
pub use stats::Stats;
