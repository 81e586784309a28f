//! How long a call may take: the caller's `grpc-timeout`, capped by the configured limit.
//! tonic enforces the timeout but does not hand it to handlers, so we read the header here.

use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataMap;

/// The instant by which one upstream request must be answered, and what a further
/// request of the same call may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
    /// The caller's own deadline (less headroom), if it sent one.
    caller: Option<Instant>,
    /// The configured bound on each upstream request.
    cap: Duration,
}

/// `now + timeout`, saturating instead of overflowing on absurd timeouts.
fn later(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

impl Deadline {
    /// A deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Self {
            at: later(timeout),
            caller: None,
            cap: timeout,
        }
    }

    /// The deadline of the next upstream request of the same call: the configured
    /// bound again from now, never past the caller's own deadline. A call that makes
    /// many requests (a large add, a results stream) gets the bound for each.
    pub fn renewed(&self) -> Self {
        let capped = later(self.cap);
        Self {
            at: self.caller.map_or(capped, |caller| caller.min(capped)),
            ..*self
        }
    }

    /// The deadline for a call: min(caller's `grpc-timeout`, `cap`).
    ///
    /// A little headroom is kept from the caller's timeout so that our
    /// DEADLINE_EXCEEDED reaches the caller before its own timer fires.
    pub fn from_metadata(metadata: &MetadataMap, cap: Duration) -> Self {
        let caller = metadata
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map(|t| later(t.saturating_sub(headroom(t))));
        Self {
            caller,
            cap,
            ..Self::after(cap)
        }
        .renewed()
    }

    /// The instant itself.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// Time left, zero once passed.
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// True once the deadline has passed.
    pub fn expired(&self) -> bool {
        self.remaining().is_zero()
    }
}

/// Time reserved for our answer to travel back: 10 % of the timeout, at most 250 ms. A
/// fixed few milliseconds were too little on a busy machine, where the caller's own
/// timer then fired first and it saw CANCELLED, not our DEADLINE_EXCEEDED.
fn headroom(timeout: Duration) -> Duration {
    (timeout / 10).min(Duration::from_millis(250))
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_rejects_garbage() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("10u"), Some(Duration::from_micros(10)));
        assert_eq!(parse_grpc_timeout("99n"), Some(Duration::from_nanos(99)));
        for bad in ["", "S", "123456789S", "5s", "-5S", "5 S", "abcm"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn caller_timeout_is_capped_and_kept_below_the_callers() {
        let mut md = MetadataMap::new();
        md.insert("grpc-timeout", "100m".parse().unwrap());
        let d = Deadline::from_metadata(&md, Duration::from_secs(30));
        assert!(d.remaining() <= Duration::from_millis(95));
        assert!(d.remaining() > Duration::from_millis(50));

        md.insert("grpc-timeout", "1H".parse().unwrap());
        let d = Deadline::from_metadata(&md, Duration::from_secs(30));
        assert!(d.remaining() <= Duration::from_secs(30));
        assert!(d.remaining() > Duration::from_secs(29));

        let d = Deadline::from_metadata(&MetadataMap::new(), Duration::from_secs(7));
        assert!(d.remaining() > Duration::from_secs(6));
        assert!(Deadline::after(Duration::MAX).remaining() > Duration::from_secs(3600));
    }

    #[tokio::test(start_paused = true)]
    async fn each_further_request_gets_the_bound_again_within_the_callers_deadline() {
        let mut md = MetadataMap::new();
        md.insert("grpc-timeout", "10S".parse().unwrap());
        let first = Deadline::from_metadata(&md, Duration::from_secs(3));
        tokio::time::advance(Duration::from_secs(2)).await;
        let second = first.renewed();
        assert_eq!(
            second.remaining(),
            Duration::from_secs(3),
            "the bound again"
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        let last = second.renewed();
        assert!(
            last.remaining() < Duration::from_secs(2),
            "the caller's deadline wins"
        );
    }
}
