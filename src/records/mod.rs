//! What the gateway remembers of the resources it created, beyond what the upstream
//! keeps: a Sutro job's id column, which Sutro's job object does not name.

mod memory;

pub use memory::MemoryRecords;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::keys::ResourceKey;

/// The gateway's own notes on one job it created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The `id_column_name` the job was created with.
    pub id_column_name: Option<String>,
}

impl JobRecord {
    /// Whether there is anything worth keeping.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Where job records are kept. One trait; backends beside it.
#[tonic::async_trait]
pub trait RecordStore: Send + Sync + 'static {
    /// Keeps `record` under `key`, replacing what was there.
    async fn put(&self, key: &ResourceKey, record: JobRecord) -> Result<()>;
    /// The record under `key`, if one is kept.
    async fn get(&self, key: &ResourceKey) -> Result<Option<JobRecord>>;
}
