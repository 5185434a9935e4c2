//! The store a URL names, opened with the bot's options.

use std::{path::PathBuf, time::Duration};

use multisession::{
    store::{Store, StoreError, StoreRef},
    stores::{
        MemoryStore, PostgresConfig, PostgresStore, RedisConfig, RedisStore, SqliteConfig,
        SqliteStore,
    },
};

use crate::{cli::StoreArgs, error::CliError};

/// What a `--store` URL names, before anything is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Redis(String),
    /// The `redis://HOST:PORT` URLs of some nodes of a Redis Cluster.
    RedisCluster(Vec<String>),
    Postgres(String),
    Memory(PathBuf),
}

const FORMS: &str = "use sqlite://PATH, redis://HOST[:PORT][/DB], \
                     redis+cluster://HOST:PORT[,HOST:PORT...], \
                     postgres://USER@HOST[:PORT]/DB or memory:PATH";

impl Location {
    pub fn parse(url: &str) -> Result<Self, CliError> {
        let bad = |why: &str| CliError::usage(format!("bad store URL `{url}`: {why}; {FORMS}"));
        let (scheme, rest) = url.split_once(':').ok_or_else(|| bad("no scheme"))?;
        let path = |rest: &str| {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                Err(bad("no file path"))
            } else {
                Ok(PathBuf::from(path))
            }
        };
        match scheme {
            "sqlite" => {
                if rest.starts_with(":memory:") || rest == "//:memory:" {
                    return Err(bad("an in-memory SQLite database holds nothing to inspect"));
                }
                Ok(Location::Sqlite(path(rest)?))
            }
            "memory" => Ok(Location::Memory(path(rest)?)),
            "redis" | "rediss" | "redis+unix" | "unix" => Ok(Location::Redis(url.to_owned())),
            "postgres" | "postgresql" => {
                if !rest.starts_with("//") {
                    return Err(bad("expected postgres://"));
                }
                Ok(Location::Postgres(url.to_owned()))
            }
            "redis+cluster" => {
                let nodes = rest
                    .strip_prefix("//")
                    .ok_or_else(|| bad("expected redis+cluster://"))?;
                let nodes: Vec<String> = nodes
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(|n| format!("redis://{n}"))
                    .collect();
                if nodes.is_empty() {
                    return Err(bad("no cluster node"));
                }
                Ok(Location::RedisCluster(nodes))
            }
            other => Err(bad(&format!("unknown scheme `{other}`"))),
        }
    }
}

/// An open store, and what only its own type can do.
pub struct Target {
    pub store: StoreRef,
    pub url: String,
    backend: Backend,
}

enum Backend {
    Sqlite(SqliteStore),
    Redis(RedisStore),
    Postgres(PostgresStore),
    Memory(MemoryStore),
}

/// How a command uses the store: whether it may create it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The store must exist (a missing SQLite file or snapshot is an error, not created).
    Existing,
    /// The store may be created (import into a new file).
    Create,
}

impl Target {
    pub async fn open(args: &StoreArgs, access: Access) -> Result<Self, CliError> {
        let url = args.store.clone().ok_or_else(|| {
            CliError::usage("no store: pass --store URL (or set MULTISESSION_STORE)")
        })?;
        let location = Location::parse(&url)?;
        let timeout = Duration::from_secs(args.connect_timeout.max(1));
        let is_sql = matches!(location, Location::Sqlite(_) | Location::Postgres(_));
        if args.table.is_some() && !is_sql {
            return Err(CliError::usage(
                "--table applies to sqlite:// and postgres:// stores",
            ));
        }
        let is_redis = matches!(location, Location::Redis(_) | Location::RedisCluster(_));
        if args.redis_prefix.is_some() && !is_redis {
            return Err(CliError::usage(
                "--redis-prefix applies to redis:// and redis+cluster:// stores",
            ));
        }
        let unreachable = |what: &str, e: StoreError| {
            CliError::store(format!("cannot open {what} store `{url}`: {e}"))
        };
        // A read of a mistyped path must not create an empty store there.
        let must_exist = |what: &str| match &location {
            Location::Sqlite(path) | Location::Memory(path)
                if access == Access::Existing && !path.exists() =>
            {
                Err(CliError::store(format!(
                    "no {what} at {} (`{url}`)",
                    path.display()
                )))
            }
            _ => Ok(()),
        };
        let backend = match &location {
            Location::Sqlite(path) => {
                must_exist("SQLite database")?;
                let mut config =
                    SqliteConfig::new().busy_timeout(timeout.min(Duration::from_secs(4)));
                if let Some(table) = &args.table {
                    config = config.table(table);
                }
                Backend::Sqlite(
                    SqliteStore::open_with(path, config)
                        .await
                        .map_err(|e| unreachable("sqlite", e))?,
                )
            }
            Location::Memory(path) => {
                must_exist("memory-store snapshot")?;
                // Saved by the command when it changed something (and by the store when
                // its last handle goes); the interval only matters to a long import.
                let store = MemoryStore::options()
                    .snapshot(path, Duration::from_secs(24 * 3600))
                    .open()
                    .map_err(|e| unreachable("memory", e))?;
                Backend::Memory(store)
            }
            Location::Redis(redis) => {
                let mut config = RedisConfig::new()
                    .connect_timeout(timeout)
                    .reconnect_attempts(1);
                if let Some(prefix) = &args.redis_prefix {
                    config = config.key_prefix(prefix);
                }
                Backend::Redis(
                    RedisStore::connect_with(redis, config)
                        .await
                        .map_err(|e| unreachable("redis", e))?,
                )
            }
            Location::RedisCluster(nodes) => {
                let mut config = RedisConfig::new()
                    .connect_timeout(timeout)
                    .reconnect_attempts(1);
                if let Some(prefix) = &args.redis_prefix {
                    config = config.key_prefix(prefix);
                }
                let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
                Backend::Redis(
                    RedisStore::connect_cluster(&nodes, config)
                        .await
                        .map_err(|e| unreachable("redis cluster", e))?,
                )
            }
            Location::Postgres(pg) => {
                let mut config = PostgresConfig::new().connect_timeout(timeout).pool_size(8);
                if let Some(table) = &args.table {
                    config = config.table(table);
                }
                Backend::Postgres(
                    PostgresStore::connect_with(pg, config)
                        .await
                        .map_err(|e| unreachable("postgres", e))?,
                )
            }
        };
        let store = match &backend {
            Backend::Sqlite(s) => StoreRef::new(s.clone()),
            Backend::Redis(s) => StoreRef::new(s.clone()),
            Backend::Postgres(s) => StoreRef::new(s.clone()),
            Backend::Memory(s) => StoreRef::new(s.clone()),
        };
        Ok(Target {
            store,
            url,
            backend,
        })
    }

    pub fn dyn_store(&self) -> &dyn Store {
        self.store.as_dyn()
    }

    /// Removes expired values; says what it did.
    pub async fn sweep(&self) -> Result<String, CliError> {
        let failed =
            |e: StoreError| CliError::store(format!("sweep failed on `{}`: {e}", self.url));
        Ok(match &self.backend {
            Backend::Sqlite(s) => format!(
                "removed {} expired values",
                s.sweep_expired().await.map_err(failed)?
            ),
            Backend::Postgres(s) => format!(
                "removed {} expired values",
                s.sweep_expired().await.map_err(failed)?
            ),
            Backend::Memory(s) => {
                let removed = s.sweep();
                self.save()?;
                format!("removed {removed} expired values")
            }
            Backend::Redis(s) => {
                let pruned = s.sweep_expired().await.map_err(failed)?;
                format!(
                    "nothing to do: Redis removes expired values by itself \
                     ({pruned} stale entries dropped from the listing index)"
                )
            }
        })
    }

    /// Makes changes durable where the store does not do it by itself (a snapshot file).
    pub fn save(&self) -> Result<(), CliError> {
        if let Backend::Memory(store) = &self.backend {
            store.save_snapshot().map_err(|e| {
                CliError::store(format!("could not save the snapshot `{}`: {e}", self.url))
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            Location::parse("sqlite://bot.db").unwrap(),
            Location::Sqlite("bot.db".into())
        );
        assert_eq!(
            Location::parse("sqlite:///var/lib/bot.db").unwrap(),
            Location::Sqlite("/var/lib/bot.db".into())
        );
        assert_eq!(
            Location::parse("memory:s.snapshot").unwrap(),
            Location::Memory("s.snapshot".into())
        );
        assert!(matches!(
            Location::parse("redis://127.0.0.1:6379/2"),
            Ok(Location::Redis(_))
        ));
        assert_eq!(
            Location::parse("redis+cluster://127.0.0.1:7000,127.0.0.1:7001").unwrap(),
            Location::RedisCluster(vec![
                "redis://127.0.0.1:7000".into(),
                "redis://127.0.0.1:7001".into()
            ])
        );
        assert!(matches!(
            Location::parse("postgresql://postgres@localhost/test"),
            Ok(Location::Postgres(_))
        ));
        for bad in [
            "bot.db",
            "mysql://x",
            "sqlite://",
            "postgres:x",
            "sqlite::memory:",
            "redis+cluster://",
            "redis+cluster:x",
        ] {
            let error = Location::parse(bad).unwrap_err().to_string();
            assert!(error.contains("bad store URL"), "{bad}: {error}");
        }
    }
}
