//! The stores that ship with multisession.
//!
//! Each is cheap to clone (clones share the data or the connection), and each passes the
//! same conformance suite. Fragments of one session struct may sit on different stores:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use multisession::{ChatContext, MultiSession, stores::{CountingStore, MemoryStore, SqliteStore}};
//!
//! #[derive(MultiSession)]
//! struct Bot {
//!     /// Kept across restarts (`SqliteStore::open("bot.db")` in a real bot).
//!     pizzas: u32,
//!     /// A quiz in progress may be lost on a restart.
//!     quiz: Option<u32>,
//! }
//!
//! let persistent = CountingStore::new(SqliteStore::in_memory().await?);
//! let sessions = Bot::builder()
//!     .pizzas(persistent.clone())
//!     .default_store(MemoryStore::new())
//!     .build();
//! sessions.run(&ChatContext::new(1), async |s| {
//!     *s.pizzas().await? += 1;
//!     s.quiz().set(Some(42)).await?;
//!     Ok::<_, multisession::Error>(())
//! }).await?;
//! assert_eq!(persistent.counts().writes, 1); // only `pizzas` went to SQLite
//! # Ok(()) }
//! ```

#[cfg(feature = "cache")]
mod cache;
mod counting;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(all(feature = "postgres", feature = "cache"))]
mod postgres_notify;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod redis_cluster;
#[cfg(feature = "redis")]
mod redis_combine;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sweeper;

#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub use cache::{CacheStats, CachedStore, Invalidator};
pub use counting::{CountingStore, Counts};
pub use memory::{MemoryOptions, MemoryStore};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresConfig, PostgresStore};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{RedisConfig, RedisStore};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{SqliteConfig, SqliteStore};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use sweeper::{SweepStats, Sweeper};
