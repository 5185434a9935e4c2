//! What the command's tests share: a bot, the stores to run on, running the binary.

#![allow(dead_code)] // each test file uses part of it

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use multisession::{
    MultiSession, keys,
    store::StoreRef,
    stores::{MemoryStore, PostgresConfig, PostgresStore, RedisConfig, RedisStore, SqliteStore},
    testing::{service_unavailable, stores, unique_namespace},
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pizza {
    pub count: u32,
    pub toppings: Vec<String>,
}

/// What version 0 of the bot stored for `settings`.
#[derive(Deserialize)]
pub struct SettingsV0 {
    pub language: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub lang: String,
    pub dark: bool,
}

pub fn v0_to_v1(old: SettingsV0) -> Settings {
    Settings {
        lang: old.language,
        dark: false,
    }
}

/// Per chat, per user (with a migration: stored at version 1), per user in chat (with a TTL).
#[derive(MultiSession)]
pub struct Bot {
    pub pizza: Pizza,
    #[session(key = keys::user, migrations = [v0_to_v1])]
    pub settings: Settings,
    #[session(key = keys::user_in_chat, ttl = "1h")]
    pub quiz: Option<u32>,
}

/// A store the tests run on, with what the command needs to reach it.
pub enum Backend {
    Memory(PathBuf),
    Sqlite(PathBuf),
    Redis {
        url: String,
        prefix: String,
    },
    /// Node URLs (`redis://host:port`) of a Redis Cluster.
    RedisCluster {
        urls: Vec<String>,
        prefix: String,
    },
    Postgres {
        url: String,
        table: String,
    },
}

fn unique() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Backend {
    pub fn memory() -> Self {
        Backend::Memory(std::env::temp_dir().join(format!("mscli-{}.snapshot", unique())))
    }

    pub fn sqlite() -> Self {
        Backend::Sqlite(std::env::temp_dir().join(format!("mscli-{}.db", unique())))
    }

    /// `None` (a visible skip, or a panic under `MULTISESSION_REQUIRE_SERVICES=1`) when
    /// the server is unreachable.
    pub async fn redis() -> Option<Self> {
        let url = stores::redis_url();
        let backend = Backend::Redis {
            url: url.clone(),
            prefix: unique_namespace(),
        };
        match backend.open().await {
            Ok(_) => Some(backend),
            Err(e) => service_unavailable("redis", &url, e),
        }
    }

    /// The shared test cluster (`MULTISESSION_REDIS_CLUSTER_URLS`, default 7000..7002).
    pub async fn redis_cluster() -> Option<Self> {
        let urls: Vec<String> = multisession::testing::stores::redis_cluster_urls();
        let backend = Backend::RedisCluster {
            urls: urls.clone(),
            prefix: unique_namespace(),
        };
        match backend.open().await {
            Ok(_) => Some(backend),
            Err(e) => service_unavailable("redis cluster", &urls.join(","), e),
        }
    }

    pub async fn postgres() -> Option<Self> {
        let url = stores::postgres_url();
        let backend = Backend::Postgres {
            url: url.clone(),
            table: format!("mscli_{}", unique()),
        };
        match backend.open().await {
            Ok(_) => Some(backend),
            Err(e) => service_unavailable("postgresql", &url, e),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Memory(_) => "memory",
            Backend::Sqlite(_) => "sqlite",
            Backend::Redis { .. } => "redis",
            Backend::RedisCluster { .. } => "redis-cluster",
            Backend::Postgres { .. } => "postgres",
        }
    }

    /// The store, as the bot opens it. A memory store saves its snapshot when the last
    /// handle goes: drop everything before running the command on it.
    pub async fn open(&self) -> Result<StoreRef, String> {
        let e = |e: multisession::store::StoreError| e.to_string();
        Ok(match self {
            Backend::Memory(path) => StoreRef::new(
                MemoryStore::options()
                    .snapshot(path, Duration::from_secs(3600))
                    .open()
                    .map_err(e)?,
            ),
            Backend::Sqlite(path) => StoreRef::new(SqliteStore::open(path).await.map_err(e)?),
            Backend::Redis { url, prefix } => StoreRef::new(
                RedisStore::connect_with(url, RedisConfig::new().key_prefix(prefix))
                    .await
                    .map_err(e)?,
            ),
            Backend::RedisCluster { urls, prefix } => {
                let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
                StoreRef::new(
                    RedisStore::connect_cluster(&nodes, RedisConfig::new().key_prefix(prefix))
                        .await
                        .map_err(e)?,
                )
            }
            Backend::Postgres { url, table } => StoreRef::new(
                PostgresStore::connect_with(url, PostgresConfig::new().table(table))
                    .await
                    .map_err(e)?,
            ),
        })
    }

    /// `--store URL` and the store's options, for the command.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["--store".to_owned()];
        match self {
            Backend::Memory(path) => args.push(format!("memory:{}", path.display())),
            Backend::Sqlite(path) => args.push(format!("sqlite://{}", path.display())),
            Backend::Redis { url, prefix } => {
                args.extend([url.clone(), "--redis-prefix".into(), prefix.clone()])
            }
            Backend::RedisCluster { urls, prefix } => {
                let nodes: Vec<&str> = urls
                    .iter()
                    .map(|u| u.strip_prefix("redis://").unwrap_or(u))
                    .collect();
                args.extend([
                    format!("redis+cluster://{}", nodes.join(",")),
                    "--redis-prefix".into(),
                    prefix.clone(),
                ])
            }
            Backend::Postgres { url, table } => {
                args.extend([url.clone(), "--table".into(), table.clone()])
            }
        }
        args
    }

    /// The command on this store, with `args` after the store's.
    pub fn cli(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = multisession_cmd();
        cmd.args(self.args()).args(args);
        cmd
    }

    /// Removes everything the test stored.
    pub async fn cleanup(&self) {
        match self {
            Backend::Memory(path) => {
                let _ = std::fs::remove_file(path);
            }
            Backend::Sqlite(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Backend::Redis { url, prefix } => {
                let Ok(client) = redis::Client::open(url.as_str()) else {
                    return;
                };
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                    return;
                };
                let index = format!("{prefix}idx");
                let keys: Vec<String> = redis::cmd("ZRANGE")
                    .arg(&index)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                for chunk in keys.chunks(500) {
                    let data: Vec<String> =
                        chunk.iter().map(|k| format!("{prefix}s:{k}")).collect();
                    let _: Result<(), _> = redis::cmd("DEL").arg(data).query_async(&mut conn).await;
                }
                let _: Result<(), _> = redis::cmd("DEL")
                    .arg(&index)
                    .arg(format!("{prefix}rev"))
                    .query_async(&mut conn)
                    .await;
            }
            Backend::RedisCluster { urls, prefix } => {
                for url in urls {
                    let Ok(client) = redis::Client::open(url.as_str()) else {
                        continue;
                    };
                    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                        continue;
                    };
                    // `{tag}prefix...`; test prefixes have no glob characters.
                    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
                        .arg(format!("{{*}}{prefix}*"))
                        .query_async(&mut conn)
                        .await
                        .unwrap_or_default();
                    for key in keys {
                        let _: Result<(), _> =
                            redis::cmd("DEL").arg(key).query_async(&mut conn).await;
                    }
                }
            }
            Backend::Postgres { url, table } => {
                let Ok(store) =
                    PostgresStore::connect_with(url, PostgresConfig::new().table(table)).await
                else {
                    return;
                };
                if let Ok(client) = store.pool().get().await {
                    let _ = client
                        .batch_execute(&format!(
                            "DROP TABLE IF EXISTS \"{table}\"; DROP SEQUENCE IF EXISTS \"{table}_revision_seq\";"
                        ))
                        .await;
                }
            }
        }
    }
}

/// The binary under test.
pub fn multisession_cmd() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_multisession"));
    // No test may hang on the command.
    cmd.timeout(Duration::from_secs(120));
    cmd.env_remove("MULTISESSION_STORE");
    cmd
}

/// Runs the command; its standard output, standard error and exit status.
pub fn run(mut cmd: assert_cmd::Command) -> (String, String, i32) {
    let output = cmd.output().expect("run the multisession binary");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        output.status.code().unwrap_or(-1),
    )
}

/// Runs the command and insists it succeeds; its standard output and error.
#[track_caller]
pub fn ok(cmd: assert_cmd::Command) -> (String, String) {
    let (stdout, stderr, code) = run(cmd);
    assert_eq!(
        code, 0,
        "the command failed:\nstdout: {stdout}\nstderr: {stderr}"
    );
    (stdout, stderr)
}

/// A runtime for the library's side of a test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
