//! ListBatchResults pages that fit in one gRPC message: an upstream page too large for
//! one is split, and the page token then says where in that upstream page to go on.

use crate::config::MAX_MESSAGE_BYTES;
use crate::error::{Error, Result};
use crate::proto::xai::v1::BatchResult;
use crate::services::chunking::repeated_field_size;

/// Marks a token of ours; anything else is the upstream's own token, passed through.
const PREFIX: &str = "bg1.";

/// Room left in a message for everything but the results (the token, the framing).
const BUDGET: usize = MAX_MESSAGE_BYTES - 64 * 1024;

/// Where a page starts: an upstream page (its token, and the size it was read with)
/// and how many of its results earlier pages already returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageStart<'a> {
    pub upstream: Option<&'a str>,
    pub limit: Option<u32>,
    pub skip: usize,
}

/// Reads a caller's `page_token`.
pub fn parse(token: &str) -> PageStart<'_> {
    let ours = token.strip_prefix(PREFIX).and_then(|rest| {
        let mut parts = rest.splitn(3, '.');
        let limit = parts.next()?.parse().ok()?;
        let skip = parts.next()?.parse().ok()?;
        let upstream = parts.next()?;
        Some(PageStart {
            upstream: Some(upstream).filter(|u| !u.is_empty()),
            limit: Some(limit),
            skip,
        })
    });
    ours.unwrap_or(PageStart {
        upstream: Some(token).filter(|t| !t.is_empty()),
        limit: None,
        skip: 0,
    })
}

/// The token of a page that starts `skip` results into the upstream page at `start`.
pub fn resume(upstream: Option<&str>, limit: u32, skip: usize) -> String {
    format!("{PREFIX}{limit}.{skip}.{}", upstream.unwrap_or(""))
}

/// How many of `results`, from the front, fit in one message; an error if not even
/// the first one does (no page could ever carry it).
pub fn fitting(results: &[BatchResult]) -> Result<usize> {
    let mut size = 0;
    for (count, result) in results.iter().enumerate() {
        size += repeated_field_size(result);
        if size > BUDGET {
            if count == 0 {
                return Err(Error::FailedPrecondition(format!(
                    "the result of {} is {size} bytes, more than one gRPC message carries \
                     ({MAX_MESSAGE_BYTES}); read it from the REST API",
                    result.batch_request_id
                )));
            }
            return Ok(count);
        }
    }
    Ok(results.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::xai::v1::batch_result::Result as Outcome;

    fn result(id: &str, bytes: usize) -> BatchResult {
        BatchResult {
            batch_request_id: id.into(),
            result: Some(Outcome::Error("x".repeat(bytes))),
        }
    }

    #[test]
    fn tokens_round_trip_and_upstream_tokens_pass_through() {
        assert_eq!(
            parse(&resume(Some("abc.def"), 100, 7)),
            PageStart {
                upstream: Some("abc.def"),
                limit: Some(100),
                skip: 7
            }
        );
        assert_eq!(
            parse(&resume(None, 5, 1)),
            PageStart {
                upstream: None,
                limit: Some(5),
                skip: 1
            }
        );
        assert_eq!(
            parse("opaque"),
            PageStart {
                upstream: Some("opaque"),
                limit: None,
                skip: 0
            }
        );
        assert_eq!(
            parse(""),
            PageStart {
                upstream: None,
                limit: None,
                skip: 0
            }
        );
    }

    #[test]
    fn a_page_holds_what_fits_and_an_oversized_result_is_refused() {
        let mib = 1024 * 1024;
        let results: Vec<_> = (0..6).map(|i| result(&format!("r{i}"), mib)).collect();
        assert_eq!(fitting(&results).unwrap(), 3);
        assert_eq!(fitting(&results[..2]).unwrap(), 2);
        let err = fitting(&[result("huge", 5 * mib)]).unwrap_err();
        assert!(err.to_string().contains("huge"), "{err}");
    }
}
