//! One simulated Sutro job: what was submitted, and its status, rows and tokens at any
//! moment, computed from its timeline (nothing runs in the background to move it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::SimConfig;

/// How a job ends once its rows are done.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// SUCCEEDED, with results.
    Succeed,
    /// FAILED with this `failure_reason.message`, although every row was processed
    /// (the case that makes "rows == total" a wrong test of success).
    Fail { message: String },
}

/// Sutro's job statuses (the eight of the SDK, less UNKNOWN, which the server never sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Queued,
    Starting,
    Running,
    Succeeded,
    Failed,
    Cancelling,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "QUEUED",
            Status::Starting => "STARTING",
            Status::Running => "RUNNING",
            Status::Succeeded => "SUCCEEDED",
            Status::Failed => "FAILED",
            Status::Cancelling => "CANCELLING",
            Status::Cancelled => "CANCELLED",
        }
    }

    /// SUCCEEDED, FAILED or CANCELLED: the states every SDK wait loop stops on.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled)
    }
}

/// The phase lengths of every job, from the simulator's config.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    queue: Duration,
    start: Duration,
    rows_per_second: f64,
    finalize: Duration,
    cancel: Duration,
}

impl Timing {
    pub fn from_config(c: &SimConfig) -> Self {
        Self {
            queue: Duration::from_millis(c.queue_ms),
            start: Duration::from_millis(c.start_ms),
            rows_per_second: c.rows_per_second.max(1e-3),
            finalize: Duration::from_millis(c.finalize_ms),
            cancel: Duration::from_millis(c.cancel_ms),
        }
    }
}

/// What a create call asked for; never changes after the create.
#[derive(Debug)]
pub struct Submission {
    pub model: String,
    /// Each row's input as submitted (a prompt string or a row object).
    pub inputs: Vec<Value>,
    /// The id column's name and each row's value, for URL inputs with `id_column_name`.
    pub id_column: Option<(String, Vec<Value>)>,
    pub job_priority: i64,
    pub system_prompt: Option<String>,
    pub json_schema: Option<Value>,
    pub sampling_params: Option<Value>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub cost_estimate: bool,
}

/// A job at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    pub status: Status,
    pub rows_done: usize,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub started: Option<Instant>,
    pub completed: Option<Instant>,
}

/// One job: its submission (shared, immutable) and the two things that can change.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub submission: Arc<Submission>,
    created_wall: DateTime<Utc>,
    created: Instant,
    timing: Timing,
    /// Cumulative tokens after row i (index i), so counters are O(1) at any moment.
    input_tokens: Arc<[u64]>,
    output_tokens: Arc<[u64]>,
    pub outcome: JobOutcome,
    cancelled: Option<Instant>,
}

impl Job {
    pub fn new(id: String, submission: Submission, timing: Timing) -> Self {
        let system = submission.system_prompt.as_deref().map_or(0, token_count);
        let mut input_tokens = Vec::with_capacity(submission.inputs.len());
        let mut output_tokens = Vec::with_capacity(submission.inputs.len());
        let (mut read, mut written) = (0, 0);
        for (index, input) in submission.inputs.iter().enumerate() {
            read += system + token_count(&input_text(input));
            written += token_count(&output_text(&submission, index, input));
            input_tokens.push(read);
            output_tokens.push(written);
        }
        Self {
            id,
            submission: Arc::new(submission),
            created_wall: Utc::now(),
            created: Instant::now(),
            timing,
            input_tokens: input_tokens.into(),
            output_tokens: output_tokens.into(),
            outcome: JobOutcome::Succeed,
            cancelled: None,
        }
    }

    pub fn rows(&self) -> usize {
        self.submission.inputs.len()
    }

    fn run_start(&self) -> Instant {
        self.created + self.timing.queue + self.timing.start
    }

    /// A cost estimate reads a sample and does not process the rows.
    fn rows_to_run(&self) -> usize {
        if self.submission.cost_estimate {
            0
        } else {
            self.rows()
        }
    }

    fn run_end(&self) -> Instant {
        self.run_start()
            + Duration::from_secs_f64(self.rows_to_run() as f64 / self.timing.rows_per_second)
    }

    fn final_at(&self) -> Instant {
        self.run_end() + self.timing.finalize
    }

    fn rows_at(&self, t: Instant) -> usize {
        let running = t.saturating_duration_since(self.run_start()).as_secs_f64();
        ((running * self.timing.rows_per_second) as usize).min(self.rows_to_run())
    }

    /// Asks the job to stop; harmless on a job that is already final.
    pub fn cancel(&mut self, now: Instant) {
        if self.cancelled.is_none() && now < self.final_at() {
            self.cancelled = Some(now);
        }
    }

    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let started = self.created + self.timing.queue;
        let (status, frozen_at, completed) = match self.cancelled {
            Some(at) if now >= at + self.timing.cancel => {
                (Status::Cancelled, at, Some(at + self.timing.cancel))
            }
            Some(at) => (Status::Cancelling, at, None),
            None if now < started => (Status::Queued, now, None),
            None if now < self.run_start() => (Status::Starting, now, None),
            None if now < self.final_at() => (Status::Running, now, None),
            None => match self.outcome {
                JobOutcome::Succeed => (Status::Succeeded, now, Some(self.final_at())),
                JobOutcome::Fail { .. } => (Status::Failed, now, Some(self.final_at())),
            },
        };
        let rows_done = self.rows_at(frozen_at);
        let tokens = |sums: &[u64]| {
            if rows_done == 0 {
                0
            } else {
                sums[rows_done - 1]
            }
        };
        Snapshot {
            status,
            rows_done,
            input_tokens: tokens(&self.input_tokens),
            output_tokens: tokens(&self.output_tokens),
            started: (frozen_at >= started).then_some(started),
            completed,
        }
    }

    /// Tokens per second while running: the rate the rows are processed at.
    pub fn tokens_per_second(&self) -> f64 {
        let rows = self.rows().max(1) as f64;
        let total = self.input_tokens.last().copied().unwrap_or(0)
            + self.output_tokens.last().copied().unwrap_or(0);
        total as f64 / rows * self.timing.rows_per_second
    }

    pub fn failure_reason(&self, snapshot: &Snapshot) -> Value {
        match (&self.outcome, snapshot.status) {
            (JobOutcome::Fail { message }, Status::Failed) => {
                json!({ "message": message, "additional_context": "simulated failure" })
            }
            _ => Value::Null,
        }
    }

    fn time(&self, at: Instant) -> String {
        let wall =
            self.created_wall + chrono::Duration::from_std(at - self.created).unwrap_or_default();
        wall.to_rfc3339_opts(SecondsFormat::Micros, false)
    }

    /// The job object of `GET jobs/{id}` and `GET list-jobs`.
    pub fn to_json(&self, now: Instant) -> Value {
        let s = self.snapshot(now);
        let sub = &self.submission;
        let usd = |input: u64, output: u64| (input as f64 * 0.05 + output as f64 * 0.2) / 1e6;
        let totals = (
            self.input_tokens.last().copied().unwrap_or(0),
            self.output_tokens.last().copied().unwrap_or(0),
        );
        let cost_estimate = sub.cost_estimate.then(|| usd(totals.0, totals.1));
        let job_cost = (s.status.is_final() && !sub.cost_estimate)
            .then(|| usd(s.input_tokens, s.output_tokens));
        let counted = |n: u64| s.started.map(|_| n);
        json!({
            "job_id": self.id,
            "status": s.status.as_str(),
            "model": sub.model,
            "system_prompt": sub.system_prompt,
            "job_priority": sub.job_priority,
            "datetime_created": self.time(self.created),
            "datetime_added": self.time(self.created),
            "datetime_started": s.started.map(|t| self.time(t)),
            "datetime_completed": s.completed.map(|t| self.time(t)),
            "json_schema": sub.json_schema,
            "sampling_params": sub.sampling_params.clone().unwrap_or_else(|| json!({})),
            "name": sub.name,
            "description": sub.description,
            "dataset_id": null,
            "input_tokens": counted(s.input_tokens),
            "output_tokens": counted(s.output_tokens),
            "job_cost": job_cost,
            "num_rows": self.rows(),
            "failure_reason": self.failure_reason(&s),
            "cost_estimate": cost_estimate,
            "run_type": if sub.cost_estimate { "COST_ESTIMATE" } else { "FULL" },
        })
    }

    /// The column-oriented `results` object of `POST job-results`, in input order.
    pub fn results(
        &self,
        include_inputs: bool,
        include_logprobs: bool,
        extra_columns: &[String],
    ) -> Value {
        let sub = &self.submission;
        let mut columns = Map::new();
        let outputs = sub
            .inputs
            .iter()
            .enumerate()
            .map(|(i, input)| Value::String(output_text(sub, i, input)));
        columns.insert("outputs".into(), outputs.collect());
        if include_inputs {
            columns.insert("inputs".into(), Value::Array(sub.inputs.clone()));
        }
        if include_logprobs {
            // The current docs' scale: normalized, 0 to 100.
            let logprobs = (0..self.rows()).map(|i| json!(50.0 + ((i * 37) % 50) as f64 * 0.97));
            columns.insert("cumulative_logprobs".into(), logprobs.collect());
        }
        if let Some((name, values)) = &sub.id_column {
            columns.insert(name.clone(), Value::Array(values.clone()));
        }
        if sub.inputs.iter().any(Value::is_object) {
            // Function runs (row-object inputs) carry a confidence score per row.
            let scores = (0..self.rows()).map(|i| json!(0.5 + ((i * 13) % 50) as f64 / 100.0));
            columns.insert("confidence_score".into(), scores.collect());
        }
        for (n, name) in extra_columns.iter().enumerate() {
            // Values unlike any id column's 1, 2, 3…, so a test tells them apart.
            let values = (0..self.rows()).map(|i| json!(1_000 * (n + 1) + 17 * i));
            columns.entry(name.clone()).or_insert(values.collect());
        }
        Value::Object(columns)
    }
}

/// A rough token count: four characters a token, at least one.
fn token_count(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4).max(1)
}

fn input_text(input: &Value) -> String {
    match input {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Row `index`'s output: deterministic, so tests can check which input it belongs to.
/// A `json_schema` job's output is a JSON object in a string, as Sutro returns it.
fn output_text(sub: &Submission, index: usize, input: &Value) -> String {
    let mut prompt = input_text(input);
    if prompt.chars().count() > 80 {
        prompt = prompt.chars().take(80).collect::<String>() + "…";
    }
    let answer = format!("Simulated {} answer {index} to: {prompt}", sub.model);
    match sub.json_schema {
        Some(_) => json!({ "answer": answer }).to_string(),
        None => answer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(rows: usize, config: &SimConfig) -> Job {
        let submission = Submission {
            model: "gpt-oss-20b".into(),
            inputs: (0..rows).map(|i| json!(format!("prompt {i}"))).collect(),
            id_column: None,
            job_priority: 0,
            system_prompt: None,
            json_schema: None,
            sampling_params: None,
            name: None,
            description: None,
            cost_estimate: false,
        };
        Job::new("job-1".into(), submission, Timing::from_config(config))
    }

    #[test]
    fn a_job_moves_through_its_phases_and_rows_never_exceed_the_total() {
        let config = SimConfig {
            queue_ms: 100,
            start_ms: 100,
            rows_per_second: 10.0,
            finalize_ms: 100,
            ..SimConfig::fast()
        };
        let job = job(10, &config);
        let at = |ms: u64| job.snapshot(job.created + Duration::from_millis(ms));
        assert_eq!(at(50).status, Status::Queued);
        assert_eq!(at(150).status, Status::Starting);
        let running = at(700);
        assert_eq!((running.status, running.rows_done), (Status::Running, 5));
        assert!(running.output_tokens > 0 && running.input_tokens > 0);
        // Every row done, the status not final yet: result finalization.
        assert_eq!(
            (at(1_250).status, at(1_250).rows_done),
            (Status::Running, 10)
        );
        assert_eq!(
            (at(1_350).status, at(1_350).rows_done),
            (Status::Succeeded, 10)
        );
    }

    #[test]
    fn a_cancel_freezes_rows_and_passes_through_cancelling() {
        let config = SimConfig {
            queue_ms: 0,
            start_ms: 0,
            rows_per_second: 10.0,
            cancel_ms: 100,
            ..SimConfig::fast()
        };
        let mut job = job(10, &config);
        job.cancel(job.created + Duration::from_millis(300));
        let at = |ms: u64| job.snapshot(job.created + Duration::from_millis(ms));
        assert_eq!((at(350).status, at(350).rows_done), (Status::Cancelling, 3));
        assert_eq!(
            (at(5_000).status, at(5_000).rows_done),
            (Status::Cancelled, 3)
        );
    }

    #[test]
    fn results_are_columns_in_input_order() {
        let job = job(3, &SimConfig::fast());
        let results = job.results(true, true, &[]);
        assert_eq!(
            results["inputs"],
            json!(["prompt 0", "prompt 1", "prompt 2"])
        );
        assert!(
            results["outputs"][2]
                .as_str()
                .unwrap()
                .ends_with("to: prompt 2")
        );
        assert_eq!(results["cumulative_logprobs"].as_array().unwrap().len(), 3);
        assert!(results.get("confidence_score").is_none());
    }
}
