//! The in-process record store: a moka cache bounded in count and time, so records
//! of jobs nobody asks about again do not pile up.

use std::time::Duration;

use moka::future::Cache;

use super::{JobRecord, RecordStore};
use crate::error::Result;
use crate::keys::ResourceKey;

/// Job records kept in this process.
#[derive(Clone)]
pub struct MemoryRecords {
    records: Cache<ResourceKey, JobRecord>,
}

impl MemoryRecords {
    /// A store keeping each record for `ttl`, and at most `capacity` records.
    pub fn new(ttl: Duration, capacity: u64) -> Self {
        Self {
            records: Cache::builder()
                .time_to_live(ttl)
                .max_capacity(capacity)
                .build(),
        }
    }
}

#[tonic::async_trait]
impl RecordStore for MemoryRecords {
    async fn put(&self, key: &ResourceKey, record: JobRecord) -> Result<()> {
        self.records.insert(key.clone(), record).await;
        Ok(())
    }

    async fn get(&self, key: &ResourceKey) -> Result<Option<JobRecord>> {
        Ok(self.records.get(key).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_are_kept_per_key_and_replaced() {
        let store = MemoryRecords::new(Duration::from_secs(60), 10);
        let record = JobRecord {
            id_column_name: Some("row_id".into()),
        };
        let key =
            |tenant: &str| ResourceKey::new(tenant, "sutro", crate::keys::kind::RECORD, "job-1");
        store.put(&key("a"), record.clone()).await.unwrap();
        assert_eq!(store.get(&key("a")).await.unwrap(), Some(record));
        assert_eq!(store.get(&key("b")).await.unwrap(), None, "per tenant");
        store.put(&key("a"), JobRecord::default()).await.unwrap();
        assert!(store.get(&key("a")).await.unwrap().unwrap().is_empty());
    }
}
