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
    /// Whether work is under way, so that an ETA means something.
    pub running: bool,
}

/// Draws updates of one job or batch.
pub struct Renderer {
    pace: Pace,
    how: How,
}

enum How {
    /// A live bar on a terminal.
    Bar(ProgressBar),
    /// A line per update, repeats skipped.
    Lines { id: String, last: Option<Update> },
}

/// When the watch began, and the first count seen and when: an ETA from the rate
/// observed since (indicatif's own ETA reads 0 after a wait in QUEUED at 0 rows).
struct Pace {
    unit: &'static str,
    started: Instant,
    first: Option<(i64, Instant)>,
}

/// A rate measured over less than this is mostly the backlog the first messages carry.
const MIN_RATE_WINDOW: Duration = Duration::from_secs(1);

impl Pace {
    fn eta(&mut self, update: &Update) -> Option<Duration> {
        // Time spent queued or starting says nothing of the pace: measure from the
        // first update that finds the work running.
        if !update.running {
            self.first = None;
            return None;
        }
        let (first_done, first_seen) = *self.first.get_or_insert((update.done, Instant::now()));
        let window = first_seen.elapsed();
        if window < MIN_RATE_WINDOW {
            return None;
        }
        eta(first_done, update, window)
    }
}

impl Renderer {
    /// A renderer for `id`, counting `unit` (`rows` or `requests`); a bar when `terminal`.
    pub fn new(id: &str, unit: &'static str, terminal: bool) -> Self {
        let pace = Pace {
            unit,
            started: Instant::now(),
            first: None,
        };
        if !terminal {
            let how = How::Lines {
                id: id.to_owned(),
                last: None,
            };
            return Self { pace, how };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
        bar.set_prefix(id.to_owned());
        // Two lines: a job id alone takes half a terminal's width, so one line would wrap.
        let template = format!(
            "{{spinner}} {{prefix}} {{msg}}\n  [{{wide_bar}}] {{pos}}/{{len}} {unit} \
             {{percent}}%  elapsed {{elapsed}}"
        );
        // The template is fixed text; should indicatif ever refuse it, a plain bar still works.
        let style = ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        // Ticks between updates keep the spinner and elapsed time moving.
        bar.enable_steady_tick(Duration::from_millis(200));
        Self {
            pace,
            how: How::Bar(bar),
        }
    }

    /// Shows `update`; plain lines skip one that repeats the last.
    pub fn show(&mut self, update: &Update, out: &mut Out) -> Result<(), CliError> {
        let eta = self.pace.eta(update);
        match &mut self.how {
            How::Bar(bar) => {
                if let Some(total) = update.total {
                    bar.set_length(u64::try_from(total).unwrap_or(0));
                }
                bar.set_position(u64::try_from(update.done).unwrap_or(0));
                let mut message = update.status.clone();
                if let Some(eta) = eta {
                    message.push_str(&format!("  eta {}", clock(eta)));
                }
                let details = details(update);
                if !details.is_empty() {
                    message.push_str("  ");
                    message.push_str(&details);
                }
                bar.set_message(message);
                Ok(())
            }
            How::Lines { id, last } => {
                if last.as_ref() == Some(update) {
                    return Ok(());
                }
                let line = line(id, self.pace.unit, self.pace.started.elapsed(), eta, update);
                *last = Some(update.clone());
                out.line(&line)?;
                out.flush()
            }
        }
    }

    /// Leaves the bar on screen as it last was (the watch is over or interrupted).
    pub fn stop(&mut self) {
        if let How::Bar(bar) = &self.how {
            bar.abandon();
        }
    }
}

/// `<id> <STATUS> <done>/<total> <unit> <percent>% elapsed <t> [eta <t>] [details]`.
fn line(id: &str, unit: &str, elapsed: Duration, eta: Option<Duration>, update: &Update) -> String {
    let mut line = format!("{id} {}", update.status);
    match update.total {
        Some(total) if total > 0 => {
            let percent = update.done.saturating_mul(100) / total;
            line.push_str(&format!(" {}/{total} {unit} {percent}%", update.done));
        }
        Some(total) => line.push_str(&format!(" {}/{total} {unit}", update.done)),
        None => line.push_str(&format!(" {} {unit}", update.done)),
    }
    line.push_str(&format!(" elapsed {}", clock(elapsed)));
    if let Some(eta) = eta {
        line.push_str(&format!(" eta {}", clock(eta)));
    }
    let details = details(update);
    if !details.is_empty() {
        line.push(' ');
        line.push_str(&details);
    }
    line
}

/// The time left at the rate seen over `elapsed` since `first_done`; none before any progress.
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
            running: true,
        };
        assert_eq!(eta(10, &update(10), Duration::from_secs(5)), None);
        let left = eta(10, &update(30), Duration::from_secs(2)).map(|d| d.as_millis());
        assert_eq!(left, Some(7000));
        assert_eq!(eta(0, &update(100), Duration::from_secs(2)), None);
    }
}
