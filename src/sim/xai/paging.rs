//! Paging of the three xAI list endpoints: `limit` and `pagination_token` read from the
//! query, and the opaque token (the last id a page returned, hex-encoded).

use axum::http::StatusCode;
use axum::response::Response;

use super::super::respond::xai_error;

/// Every list's default page size (the proto: "Defaults to 100").
const DEFAULT_LIMIT: usize = 100;

/// What one list call asks for.
#[derive(Debug)]
pub struct Page {
    pub limit: usize,
    /// The id the previous page ended with.
    pub after: Option<String>,
}

impl Page {
    /// Reads `limit` (absent or 0: the default; above `max`: 400) and the token.
    pub fn parse(query: Option<&str>, max: Option<usize>) -> Result<Self, Response> {
        let mut limit = None;
        let mut token = None;
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "limit" => limit = Some(value.into_owned()),
                "pagination_token" => token = Some(value.into_owned()),
                _ => {}
            }
        }
        let limit = match limit.as_deref().map(str::trim) {
            None | Some("") => DEFAULT_LIMIT,
            Some(text) => match text.parse::<i64>() {
                Ok(0) => DEFAULT_LIMIT,
                Ok(n) if n < 0 => {
                    return Err(bad_request(format!("limit must not be negative, got {n}")));
                }
                Ok(n) => match (usize::try_from(n), max) {
                    (Ok(n), Some(max)) if n > max => {
                        return Err(bad_request(format!("limit must be at most {max}, got {n}")));
                    }
                    (Ok(n), _) => n,
                    (Err(_), _) => {
                        return Err(bad_request(format!("Invalid value for limit: {text}")));
                    }
                },
                Err(_) => return Err(bad_request(format!("Invalid value for limit: {text}"))),
            },
        };
        let after = match token.filter(|t| !t.is_empty()) {
            None => None,
            Some(token) => Some(decode(&token).ok_or_else(bad_token)?),
        };
        Ok(Self { limit, after })
    }
}

/// The first `limit` items (each with its id) and, when more follow, the token of the next page.
pub fn take<'a, T>(
    mut items: impl Iterator<Item = (&'a str, T)>,
    limit: usize,
) -> (Vec<T>, Option<String>) {
    let mut page = Vec::new();
    let mut last = None;
    for (id, item) in items.by_ref().take(limit) {
        page.push(item);
        last = Some(id);
    }
    let more = items.next().is_some();
    (
        page,
        last.filter(|_| more).map(|id| hex::encode(id.as_bytes())),
    )
}

fn decode(token: &str) -> Option<String> {
    String::from_utf8(hex::decode(token).ok()?).ok()
}

fn bad_request(message: String) -> Response {
    xai_error(StatusCode::BAD_REQUEST, message)
}

/// The 400 for a token this list never handed out.
pub fn bad_token() -> Response {
    bad_request("Invalid pagination_token".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_the_last_id_and_only_appear_when_more_follow() {
        let ids = ["a", "b", "c"];
        let (page, token) = take(ids.iter().map(|id| (*id, *id)), 2);
        assert_eq!(page, ["a", "b"]);
        assert_eq!(token.as_deref().and_then(decode).as_deref(), Some("b"));
        assert_eq!(take(ids.iter().map(|id| (*id, *id)), 3).1, None);
    }

    #[test]
    fn limits_default_and_cap() {
        let page = Page::parse(None, Some(1000)).map_err(|_| ()).unwrap();
        assert_eq!((page.limit, page.after), (100, None));
        assert!(Page::parse(Some("limit=1001"), Some(1000)).is_err());
        assert!(Page::parse(Some("limit=-1"), None).is_err());
        assert!(Page::parse(Some("pagination_token=zz"), None).is_err());
        assert_eq!(
            Page::parse(Some("limit=0"), None)
                .map_err(|_| ())
                .unwrap()
                .limit,
            100
        );
    }
}
