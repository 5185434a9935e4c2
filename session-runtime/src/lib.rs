//! The runtime of [multisession](https://docs.rs/multisession): stores, codecs, keys and
//! the lazy per-fragment session cells. Use it through the `multisession` crate.

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod admin;
mod affinity;
mod bot_namespace;
mod builder;
mod cell;
mod change;
mod chat_migration;
pub mod codec;
mod commit;
mod config;
pub mod context;
pub mod envelope;
pub mod error;
mod fragment;
pub mod keys;
mod lock;
mod session;
mod spec;
mod stats;
pub mod store;
pub mod stores;
mod strict;
pub mod telegram;
#[cfg(feature = "teloxide")]
#[cfg_attr(docsrs, doc(cfg(feature = "teloxide")))]
pub mod teloxide;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod update;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use admin::SessionPage;
pub use async_trait::async_trait;
pub use config::{Config, OnConflict, OnDecodeError, OnHandlerError};
pub use context::{ChatContext, ChatMigration, SessionContext};
pub use error::{Error, SaveError, SaveFailure, Stored, WriteOutcome};
pub use fragment::{Fragment, FragmentFuture, FragmentGuard};
pub use session::{MultiSession, Session, Sessions};
pub use stats::Stats;
pub use strict::Loaded;
