//! How `watch` shows progress: an indicatif bar when stdout is a terminal, otherwise
//! one plain line per update (what scripts, logs and the tests read).

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::error::CliError;
use super::output::Out;

/// One moment of a job or batch, in the terms both renderers show.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The status as the upstream names it (`RUNNING`, `SUCCEEDED`, ...).
    pub status: String,
    /// Rows or requests finished.
    pub done: i64,
    /// Rows or requests in all, when known.
    pub total: Option<i64>,
    /// Input tokens so far, when the upstream reports them.
    pub input_tokens: Option<i64>,
    /// Output tokens so far, when the upstream reports them.
    pub output_tokens: Option<i64>,
    /// Current throughput, when the upstream reports it.
    pub tokens_per_second: Option<f64>,
    /// Anything else worth a glance (a batch's error count), already formatted.
    pub note: String,
}

/// Draws updates of one job or batch.
pub enum Renderer {
    /// A live bar on a terminal.
    Bar(ProgressBar),
    /// A line per update.
    Lines(Lines),
}

/// The plain-line renderer's memory: when the watch began and the first count seen,
/// for elapsed time and an ETA from the rate observed since.
pub struct Lines {
    id: String,
    unit: &'static str,
    started: Instant,
    first_done: Option<i64>,
    last: Option<Update>,
}

impl Renderer {
    /// A renderer for `id`, counting `unit` (`rows` or `requests`); a bar when `terminal`.
    pub fn new(id: &str, unit: &'static str, terminal: bool) -> Self {
        if !terminal {
            return Self::Lines(Lines {
                id: id.to_owned(),
                unit,
                started: Instant::now(),
                first_done: None,
                last: None,
            });
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
        bar.set_prefix(id.to_owned());
        let template = format!(
            "{{spinner}} {{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{percent}}% \
             elapsed {{elapsed}} eta {{eta}} {{msg}}"
        );
        // The template is fixed text; should indicatif ever refuse it, a plain bar still works.
        let style = ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        // Ticks between updates keep the spinner and elapsed time moving.
        bar.enable_steady_tick(Duration::from_millis(200));
        Self::Bar(bar)
    }

    /// Shows `update`. A heartbeat only ticks the bar; plain lines skip repeats.
    pub fn show(&mut self, update: &Update, out: &mut Out) -> Result<(), CliError> {
        match self {
            Self::Bar(bar) => {
                if let Some(total) = update.total {
                    bar.set_length(u64::try_from(total).unwrap_or(0));
                }
                bar.set_position(u64::try_from(update.done).unwrap_or(0));
                bar.set_message(format!("{} {}", update.status, details(update)));
                Ok(())
            }
            Self::Lines(lines) => {
                if lines.last.as_ref() == Some(update) {
                    return Ok(());
                }
                let line = lines.line(update);
                lines.last = Some(update.clone());
                out.line(&line)?;
                out.flush()
            }
        }
    }

    /// Leaves the bar on screen as it last was (the watch is over or interrupted).
    pub fn stop(&mut self) {
        if let Self::Bar(bar) = self {
            bar.abandon();
        }
    }
}

impl Lines {
    fn line(&mut self, update: &Update) -> String {
        let elapsed = self.started.elapsed();
        let first = *self.first_done.get_or_insert(update.done);
        let mut line = format!("{} {}", self.id, update.status);
        match update.total {
            Some(total) if total > 0 => {
                let percent = update.done.saturating_mul(100) / total;
                line.push_str(&format!(
                    " {}/{total} {} {percent}%",
                    update.done, self.unit
                ));
            }
            Some(total) => line.push_str(&format!(" {}/{total} {}", update.done, self.unit)),
            None => line.push_str(&format!(" {} {}", update.done, self.unit)),
        }
        line.push_str(&format!(" elapsed {}", clock(elapsed)));
        if let Some(eta) = eta(first, update, elapsed) {
            line.push_str(&format!(" eta {}", clock(eta)));
        }
        let details = details(update);
        if !details.is_empty() {
            line.push(' ');
            line.push_str(&details);
        }
        line
    }
}

/// The time left at the rate seen since the watch began; none before any progress.
fn eta(first_done: i64, update: &Update, elapsed: Duration) -> Option<Duration> {
    let total = update.total?;
    let remaining = total.checked_sub(update.done).filter(|r| *r > 0)?;
    let progressed = update.done.checked_sub(first_done).filter(|p| *p > 0)?;
    let per_item = elapsed.as_secs_f64() / progressed as f64;
    Duration::try_from_secs_f64(per_item * remaining as f64).ok()
}

/// Tokens and notes, where there are any.
fn details(update: &Update) -> String {
    let mut parts = Vec::new();
    if let Some(tokens) = update.input_tokens {
        parts.push(format!("in {tokens} tok"));
    }
    if let Some(tokens) = update.output_tokens {
        parts.push(format!("out {tokens} tok"));
    }
    if let Some(rate) = update.tokens_per_second {
        parts.push(format!("{rate:.1} tok/s"));
    }
    if !update.note.is_empty() {
        parts.push(update.note.clone());
    }
    parts.join(" ")
}

/// `1m05s`-style durations; seconds with a tenth under a minute.
fn clock(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds >= 3600 {
        format!(
            "{}h{:02}m{:02}s",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60
        )
    } else if seconds >= 60 {
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_clocks() {
        assert_eq!(clock(Duration::from_millis(1500)), "1.5s");
        assert_eq!(clock(Duration::from_secs(65)), "1m05s");
        assert_eq!(clock(Duration::from_secs(3725)), "1h02m05s");
    }

    #[test]
    fn eta_needs_progress_since_the_watch_began() {
        let update = |done| Update {
            status: "RUNNING".into(),
            done,
            total: Some(100),
            input_tokens: None,
            output_tokens: None,
            tokens_per_second: None,
            note: String::new(),
        };
        assert_eq!(eta(10, &update(10), Duration::from_secs(5)), None);
        let left = eta(10, &update(30), Duration::from_secs(2)).map(|d| d.as_millis());
        assert_eq!(left, Some(7000));
        assert_eq!(eta(0, &update(100), Duration::from_secs(2)), None);
    }
}
