//! What the gateway remembers of the resources it created, beyond what the upstream
//! keeps: a Sutro job's id column, which Sutro's job object does not name.

mod memory;

pub use memory::MemoryRecords;

use serde::{Deserialize, Serialize};

use crate::error::Result;

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

/// The store key of a job's record: per tenant, so a tenant reads only its own notes.
pub fn key(provider: &str, tenant: &str, id: &str) -> String {
    format!("{provider}:{tenant}:{id}:record")
}

/// Where job records are kept. One trait; backends beside it.
#[tonic::async_trait]
pub trait RecordStore: Send + Sync + 'static {
    /// Keeps `record` under `key`, replacing what was there.
    async fn put(&self, key: String, record: JobRecord) -> Result<()>;
    /// The record under `key`, if one is kept.
    async fn get(&self, key: &str) -> Result<Option<JobRecord>>;
}
