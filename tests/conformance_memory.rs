//! The conformance suite on the stores that need no server.

use multisession::{
    store::StoreRef,
    stores::{CountingStore, MemoryStore},
};

mod memory {
    use super::*;

    async fn make() -> Option<StoreRef> {
        Some(StoreRef::new(MemoryStore::new()))
    }

    multisession::conformance_tests!(make);
}

mod counting {
    use super::*;

    async fn make() -> Option<StoreRef> {
        Some(StoreRef::new(CountingStore::new(MemoryStore::new())))
    }

    multisession::conformance_tests!(make);
}

/// A custom store in a few lines, as the docs show: no revisions, batches or expiry.
mod basic {
    use std::{collections::HashMap, sync::Mutex, time::Duration};

    use multisession::store::{Record, Store, StoreError, StoreRef};

    #[derive(Default)]
    struct TinyStore(Mutex<HashMap<String, Vec<u8>>>);

    #[multisession::async_trait]
    impl Store for TinyStore {
        fn name(&self) -> &str {
            "tiny"
        }
        async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
            let map = self.0.lock().map_err(StoreError::backend)?;
            Ok(map.get(key).map(|v| Record::new(v.clone(), 0)))
        }
        async fn write(
            &self,
            key: &str,
            value: &[u8],
            _ttl: Option<Duration>,
        ) -> Result<(), StoreError> {
            self.0
                .lock()
                .map_err(StoreError::backend)?
                .insert(key.to_owned(), value.to_vec());
            Ok(())
        }
        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.0.lock().map_err(StoreError::backend)?.remove(key);
            Ok(())
        }
    }

    async fn make() -> Option<StoreRef> {
        Some(StoreRef::new(TinyStore::default()))
    }

    multisession::conformance_tests!(make);
}
