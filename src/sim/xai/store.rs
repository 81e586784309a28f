//! One simulated xAI batch and its requests: each request's state is read lazily from
//! timestamps (simulated time, no background work), and rendered as xAI's REST JSON.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use super::admit::{Item, Kind};
use super::outcome;

/// `expire_time` is creation + 30 days: observed live; the retention is not documented.
const EXPIRE_DAYS: i64 = 30;

/// A moment on both clocks: `at` drives simulated time, `wall` is what the API shows.
#[derive(Debug, Clone, Copy)]
pub struct Moment {
    pub at: Instant,
    pub wall: DateTime<Utc>,
}

impl Moment {
    pub fn now() -> Self {
        Self {
            at: Instant::now(),
            wall: Utc::now(),
        }
    }

    pub fn after(self, delay: Duration) -> Self {
        Self {
            at: self.at + delay,
            wall: self.wall + TimeDelta::from_std(delay).unwrap_or(TimeDelta::zero()),
        }
    }
}

/// xAI's REST times: every official example, and every live capture, is date-only.
pub fn date(wall: DateTime<Utc>) -> String {
    wall.format("%Y-%m-%d").to_string()
}

/// Where a request stands at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending,
    Succeeded,
    Failed,
    Cancelled,
}

impl State {
    /// The REST spelling (lowercase, no `STATE_` prefix).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }
}

/// One request as admitted.
pub struct Request {
    pub kind: Kind,
    pub model: String,
    /// The `batch_request` object as submitted: a re-add must match it exactly.
    pub content: Value,
    pub added: Moment,
    pub finishes: Moment,
    /// The error it finishes with, for a body the API only refuses per request.
    pub failure: Option<String>,
}

/// One batch.
pub struct Batch {
    pub id: String,
    name: String,
    api_key_id: String,
    created: Moment,
    /// A file-based batch's file id; such a batch is sealed.
    pub input_file_id: Option<String>,
    /// When the caller cancelled it.
    cancelled: Option<Moment>,
    /// When xAI finishes processing the input file (file-based batches only).
    file_processed: Option<Moment>,
    /// Sorted by id: results are listed in id order (as observed live), and a page token
    /// naming the last id returned stays valid while requests are added.
    pub requests: BTreeMap<String, Request>,
}

impl Batch {
    pub fn new(
        id: String,
        name: String,
        api_key_id: String,
        input_file_id: Option<String>,
        now: Moment,
        request_time: Duration,
    ) -> Self {
        let file_processed = input_file_id.as_ref().map(|_| now.after(request_time));
        Self {
            id,
            name,
            api_key_id,
            created: now,
            input_file_id,
            cancelled: None,
            file_processed,
            requests: BTreeMap::new(),
        }
    }

    /// When and why xAI cancelled the batch, if it has by `now`. The simulator has no
    /// Files API, so no file id can name an uploaded file: processing always fails
    /// validation, and the guide says a batch with an invalid file is cancelled with a
    /// message (never an HTTP error). A caller's earlier cancel stops the processing.
    fn cancelled_by_xai(&self, now: Instant) -> Option<(Moment, String)> {
        let processed = self.file_processed.filter(|p| p.at <= now)?;
        if self.cancelled.is_some_and(|c| c.at < processed.at) {
            return None;
        }
        let file = self.input_file_id.as_deref().unwrap_or_default();
        Some((
            processed,
            format!("JSONL file validation failed: file {file} not found"),
        ))
    }

    /// Whether the batch takes no more requests because it was cancelled (by anyone).
    pub fn is_cancelled(&self, now: Instant) -> bool {
        self.cancelled.is_some() || self.cancelled_by_xai(now).is_some()
    }

    /// Cancels it: pending requests will never run; finished ones keep their results.
    /// Cancelling a cancelled batch changes nothing.
    pub fn cancel(&mut self, now: Moment) {
        if !self.is_cancelled(now.at) {
            self.cancelled = Some(now);
        }
    }

    /// Where `request` stands at `now`.
    pub fn state_of(&self, request: &Request, now: Instant) -> State {
        let finished = request.finishes.at <= now;
        match self.cancelled {
            Some(cancel) if request.finishes.at > cancel.at => State::Cancelled,
            _ if !finished => State::Pending,
            _ if request.failure.is_some() => State::Failed,
            _ => State::Succeeded,
        }
    }

    /// Admits validated items (all or none): an id already in the batch must carry the
    /// same content (then it is a no-op); otherwise the whole call is refused with 412.
    /// The new requests of one call finish over the last quarter of `request_time`.
    pub fn add(
        &mut self,
        items: Vec<Item>,
        now: Moment,
        request_time: Duration,
    ) -> Result<(), String> {
        for item in &items {
            if let Some(id) = &item.id
                && let Some(existing) = self.requests.get(id)
                && existing.content != item.content
            {
                return Err(format!(
                    "batch_request_id '{id}' content differs from originally submitted"
                ));
            }
        }
        let fresh: Vec<Item> = items
            .into_iter()
            .filter(|item| {
                item.id
                    .as_ref()
                    .is_none_or(|id| !self.requests.contains_key(id))
            })
            .collect();
        let count = fresh.len() as u32;
        for (i, item) in (1..).zip(fresh) {
            let finishes = now.after(request_time * 3 / 4 + request_time * i / (4 * count));
            let id = item
                .id
                .unwrap_or_else(|| format!("batch_request_{}", uuid::Uuid::new_v4()));
            let request = Request {
                kind: item.kind,
                model: item.model,
                content: item.content,
                added: now,
                finishes,
                failure: item.failure,
            };
            self.requests.insert(id, request);
        }
        Ok(())
    }

    /// The requests after `after` (a page token's id), in id order.
    pub fn requests_after<'a>(
        &'a self,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a str, &'a Request)> {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.requests
            .range::<str, _>((start, Bound::Unbounded))
            .map(|(id, r)| (id.as_str(), r))
    }

    /// The batch as xAI's REST `Batch` (§1.3).
    pub fn to_json(&self, now: Instant) -> Value {
        let (mut pending, mut succeeded, mut failed, mut cancelled) = (0u64, 0u64, 0u64, 0u64);
        for request in self.requests.values() {
            *match self.state_of(request, now) {
                State::Pending => &mut pending,
                State::Succeeded => &mut succeeded,
                State::Failed => &mut failed,
                State::Cancelled => &mut cancelled,
            } += 1;
        }
        let by_xai = self.cancelled_by_xai(now);
        let cancel_time = self
            .cancelled
            .or(by_xai.as_ref().map(|(at, _)| *at))
            .map(|c| date(c.wall));
        let expire = self.created.wall + TimeDelta::days(EXPIRE_DAYS);
        let mut batch = json!({
            "batch_id": self.id,
            "name": self.name,
            "create_time": date(self.created.wall),
            "expire_time": date(expire),
            "create_api_key_id": self.api_key_id,
            "cancel_time": cancel_time,
            "cancel_by_xai_message": by_xai.map(|(_, message)| message),
            "state": {
                "num_requests": self.requests.len(),
                "num_pending": pending,
                "num_success": succeeded,
                "num_error": failed,
                "num_cancelled": cancelled,
            },
        });
        if let (Some(file), Some(map)) = (&self.input_file_id, batch.as_object_mut()) {
            map.insert("input_file_id".into(), json!(file));
        }
        batch
    }

    /// One request's metadata (§1.6).
    pub fn metadata_json(&self, id: &str, request: &Request, now: Instant) -> Value {
        let state = self.state_of(request, now);
        let finish_time = match state {
            State::Pending => None,
            State::Succeeded | State::Failed => Some(request.finishes.wall),
            State::Cancelled => self.cancelled.map(|c| c.wall),
        };
        json!({
            "batch_request_id": id,
            "endpoint": request.kind.endpoint(),
            "model": request.model,
            "state": state.as_str(),
            "create_time": date(request.added.wall),
            "finish_time": finish_time.map(date),
        })
    }

    /// One request's result (§1.7), or `None` while it is pending.
    pub fn result_json(&self, id: &str, request: &Request, now: Instant) -> Option<Value> {
        let result = match self.state_of(request, now) {
            State::Pending => return None,
            State::Succeeded => json!({ "response": outcome::response(&self.id, id, request) }),
            State::Failed => json!({ "error": request.failure }),
            State::Cancelled => json!({ "error": "Batch cancelled" }),
        };
        Some(json!({ "batch_request_id": id, "batch_result": result }))
    }
}
