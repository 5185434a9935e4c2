//! Test stores: one that fails on demand, one whose reads only finish together.
#![allow(dead_code)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use multisession::{
    async_trait,
    store::{Capabilities, Outcome, Record, Store, StoreError, StoreRef, Write},
    stores::MemoryStore,
};
use tokio::sync::Notify;

/// Wraps a store; reads and/or writes fail while the switches are on.
#[derive(Clone)]
pub struct FlakyStore {
    inner: StoreRef,
    name: &'static str,
    pub fail_reads: Arc<AtomicBool>,
    pub fail_writes: Arc<AtomicBool>,
}

impl FlakyStore {
    pub fn new(name: &'static str) -> Self {
        Self {
            inner: StoreRef::new(MemoryStore::new()),
            name,
            fail_reads: Arc::default(),
            fail_writes: Arc::default(),
        }
    }

    pub fn inner(&self) -> &dyn Store {
        self.inner.as_dyn()
    }

    fn check(flag: &AtomicBool, what: &str) -> Result<(), StoreError> {
        if flag.load(Ordering::SeqCst) {
            Err(StoreError::backend(format!("injected {what} failure")))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Store for FlakyStore {
    fn name(&self) -> &str {
        self.name
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.as_dyn().capabilities()
    }
    async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
        Self::check(&self.fail_reads, "read")?;
        self.inner.as_dyn().read(key).await
    }
    async fn write(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        Self::check(&self.fail_writes, "write")?;
        self.inner.as_dyn().write(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        Self::check(&self.fail_writes, "delete")?;
        self.inner.as_dyn().delete(key).await
    }
    async fn read_many(&self, keys: &[&str]) -> Result<Vec<Option<Record>>, StoreError> {
        Self::check(&self.fail_reads, "read")?;
        self.inner.as_dyn().read_many(keys).await
    }
    async fn apply(&self, writes: &[Write]) -> Vec<Result<Outcome, StoreError>> {
        if let Err(e) = Self::check(&self.fail_writes, "write") {
            return writes
                .iter()
                .map(|_| Err(StoreError::backend(&e)))
                .collect();
        }
        self.inner.as_dyn().apply(writes).await
    }
}

/// A rendezvous shared by several stores: a read completes only once `parties` reads
/// (across all stores sharing it) have started. Sequential loading would never finish.
#[derive(Clone)]
pub struct Rendezvous {
    started: Arc<AtomicUsize>,
    all_started: Arc<Notify>,
    parties: usize,
}

impl Rendezvous {
    pub fn new(parties: usize) -> Self {
        Self {
            started: Arc::default(),
            all_started: Arc::default(),
            parties,
        }
    }

    async fn arrive(&self) {
        let notified = self.all_started.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.started.fetch_add(1, Ordering::SeqCst) + 1 >= self.parties {
            self.all_started.notify_waiters();
            return;
        }
        notified.await;
    }
}

/// A memory store whose reads wait at a [`Rendezvous`].
#[derive(Clone)]
pub struct RendezvousStore {
    inner: MemoryStore,
    rendezvous: Rendezvous,
}

impl RendezvousStore {
    pub fn new(rendezvous: &Rendezvous) -> Self {
        Self {
            inner: MemoryStore::new(),
            rendezvous: rendezvous.clone(),
        }
    }
}

#[async_trait]
impl Store for RendezvousStore {
    fn name(&self) -> &str {
        "rendezvous"
    }
    async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
        self.rendezvous.arrive().await;
        self.inner.read(key).await
    }
    async fn write(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        self.inner.write(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
    async fn read_many(&self, keys: &[&str]) -> Result<Vec<Option<Record>>, StoreError> {
        self.rendezvous.arrive().await;
        self.inner.read_many(keys).await
    }
}

/// Fails a test that would otherwise hang forever (a deadlock); not a timing assertion.
pub async fn no_hang<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(60), f).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: did not finish (deadlock?)"),
    }
}
