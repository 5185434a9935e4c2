//! The shared servers of the store tests, from the environment with loopback defaults.
//! `None` means "skip" (with a visible message), or a panic under
//! `MULTISESSION_REQUIRE_SERVICES=1`.

use multisession::store::StoreRef;

/// `MULTISESSION_REDIS_URL`, default `redis://127.0.0.1:6379`.
pub fn redis_url() -> String {
    std::env::var("MULTISESSION_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `MULTISESSION_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`.
pub fn postgres_url() -> String {
    std::env::var("MULTISESSION_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A Redis store under the key prefix shared by the tests (`multisession-test:`); tests
/// keep apart through key namespaces of their own.
#[cfg(feature = "redis")]
pub async fn redis() -> Option<StoreRef> {
    let url = redis_url();
    let config = multisession::stores::RedisConfig::new().key_prefix("multisession-test:");
    match multisession::stores::RedisStore::connect_with(&url, config).await {
        Ok(store) => Some(StoreRef::new(store)),
        Err(e) => multisession::testing::service_unavailable("redis", &url, e),
    }
}

/// A PostgreSQL store on the tests' table (`multisession_test`).
#[cfg(feature = "postgres")]
pub async fn postgres() -> Option<StoreRef> {
    let url = postgres_url();
    let config = multisession::stores::PostgresConfig::new().table("multisession_test");
    match multisession::stores::PostgresStore::connect_with(&url, config).await {
        Ok(store) => Some(StoreRef::new(store)),
        Err(e) => multisession::testing::service_unavailable("postgresql", &url, e),
    }
}
