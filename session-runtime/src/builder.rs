//! What the generated builder collects before [`Sessions`](crate::Sessions) exist.

use crate::{config::Config, store::StoreRef, stores::MemoryStore};

/// The stores and config a generated builder collects.
#[doc(hidden)]
pub struct BuilderCore {
    stores: Vec<Option<StoreRef>>,
    default_store: Option<StoreRef>,
    config: Config,
}

impl BuilderCore {
    pub fn new(fragments: usize) -> Self {
        Self {
            stores: vec![None; fragments],
            default_store: None,
            config: Config::default(),
        }
    }

    pub fn set_store(&mut self, index: usize, store: StoreRef) {
        if let Some(slot) = self.stores.get_mut(index) {
            *slot = Some(store);
        }
    }

    pub fn set_default_store(&mut self, store: StoreRef) {
        self.default_store = Some(store);
    }

    pub fn set_config(&mut self, config: Config) {
        self.config = config;
    }

    /// The store of every fragment (the default store, or one shared memory store, where
    /// none was given) and the config.
    pub fn finish(self) -> (Vec<StoreRef>, Config) {
        let fallback = self
            .default_store
            .unwrap_or_else(|| StoreRef::new(MemoryStore::new()));
        let stores = self
            .stores
            .into_iter()
            .map(|store| store.unwrap_or_else(|| fallback.clone()))
            .collect();
        (stores, self.config)
    }
}
