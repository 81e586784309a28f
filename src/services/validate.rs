//! Request checks shared by every service, run before anything is sent upstream.
//! Violations are collected so one INVALID_ARGUMENT names every bad field at once.

use crate::error::{Error, FieldViolation, Result};

/// Longest identifier accepted into an upstream URL path.
pub const MAX_ID_BYTES: usize = 256;

/// Collects field violations for one request.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` is wrong.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Checks an id that will be placed in an upstream URL path.
    pub fn id(&mut self, field: &str, id: &str) {
        if let Some(problem) = unsafe_id(id) {
            self.add(field, problem);
        }
    }

    /// Checks that `value` has at most `max` characters.
    pub fn max_chars(&mut self, field: &str, value: Option<&str>, max: usize) {
        if let Some(value) = value {
            let count = value.chars().count();
            if count > max {
                self.add(
                    field,
                    format!("must be at most {max} characters (got {count})"),
                );
            }
        }
    }

    /// Checks a page size: 0 (meaning the default) or within `1..=max`.
    pub fn page_size(&mut self, field: &str, size: i32, max: i32) {
        if size < 0 || size > max {
            self.add(
                field,
                format!("must be between 1 and {max}, or 0 for the default (got {size})"),
            );
        }
    }

    /// Checks an opaque page token handed back by a previous page.
    pub fn page_token(&mut self, field: &str, token: &str) {
        if token.len() > 4096 || token.chars().any(char::is_control) {
            self.add(field, "is not a page token this service issued");
        }
    }

    /// Checks a caller-chosen idempotency key.
    pub fn request_id(&mut self, field: &str, id: &str) {
        if id.len() > MAX_ID_BYTES {
            self.add(field, format!("must be at most {MAX_ID_BYTES} bytes"));
        } else if id.chars().any(char::is_control) {
            self.add(field, "must not contain control characters");
        }
    }

    /// Checks that `value` is a known value of the proto enum `E`: prost keeps an
    /// unknown number as is, and reading it would silently give the default.
    pub fn known_enum<E: TryFrom<i32>>(&mut self, field: &str, value: i32) {
        if E::try_from(value).is_err() {
            self.add(field, format!("{value} is not a known value of this enum"));
        }
    }

    /// `Ok` if nothing was recorded, else INVALID_ARGUMENT naming each field.
    pub fn finish(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(self.0))
        }
    }
}

/// Why `id` cannot go into a URL path, or `None` if it can.
pub fn unsafe_id(id: &str) -> Option<String> {
    if id.is_empty() {
        return Some("must not be empty".into());
    }
    if id.len() > MAX_ID_BYTES {
        return Some(format!("must be at most {MAX_ID_BYTES} bytes"));
    }
    if id.contains("..") || id == "." {
        return Some("must not be `.` or contain `..`".into());
    }
    // Upstream ids are `job-<uuid>` and `batch_<uuid>`: a closed alphabet keeps out
    // everything a URL would read as structure (`/`, `?`, `#`, `%`, and `:`, which
    // would turn `<id>:cancel` into another custom method).
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~')))
    {
        return Some(format!(
            "must hold only letters, digits, `-`, `_`, `.` and `~`, not {c:?}"
        ));
    }
    None
}

/// Checks a URL the upstream will download from: https, or http to loopback.
pub fn download_url(violations: &mut Violations, field: &str, raw: &str) {
    match url::Url::parse(raw) {
        Err(e) => violations.add(field, format!("is not a URL: {e}")),
        Ok(url) => {
            let loopback = url.host_str().is_some_and(|h| {
                h.eq_ignore_ascii_case("localhost")
                    || h.trim_matches(|c| c == '[' || c == ']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
            match url.scheme() {
                "https" => {}
                "http" if loopback => {}
                "http" => violations.add(field, "must use https (http only for loopback hosts)"),
                other => violations.add(field, format!("must be an https URL, not {other}:")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_escape_the_path_are_refused() {
        for bad in [
            "",
            "a/b",
            "a?b",
            "a#b",
            "..",
            "a..b",
            "a\nb",
            "a b",
            "a%2Fb",
            &"x".repeat(257),
        ] {
            assert!(unsafe_id(bad).is_some(), "{bad:?}");
        }
        for good in ["job-25edd4b9-e404-4176-86d2-f78c3fc6cbc3", "batch_1", "a.b"] {
            assert_eq!(unsafe_id(good), None, "{good:?}");
        }
    }

    #[test]
    fn unknown_enum_values_are_named() {
        use crate::proto::sutro::v1::AuthScope;
        let mut v = Violations::new();
        v.known_enum::<AuthScope>("scope", 2);
        assert!(v.finish().is_ok());
        let mut v = Violations::new();
        v.known_enum::<AuthScope>("scope", 99);
        let Err(Error::InvalidArgument(fields)) = v.finish() else {
            panic!("expected a violation")
        };
        assert_eq!(fields[0].field, "scope");
        assert!(fields[0].description.contains("99"), "{fields:?}");
    }

    #[test]
    fn download_urls_must_be_https_unless_loopback() {
        let mut v = Violations::new();
        download_url(&mut v, "a", "https://bucket.example/in.csv");
        download_url(&mut v, "b", "http://127.0.0.1:9/in.csv");
        assert!(v.finish().is_ok());
        let mut v = Violations::new();
        download_url(&mut v, "c", "http://bucket.example/in.csv");
        download_url(&mut v, "d", "s3://bucket/in.csv");
        download_url(&mut v, "e", "nope");
        let Err(Error::InvalidArgument(fields)) = v.finish() else {
            panic!("expected violations")
        };
        assert_eq!(
            fields.iter().map(|f| f.field.as_str()).collect::<Vec<_>>(),
            ["c", "d", "e"]
        );
    }
}
