//! An upstream's answer as the services see it: the decoded body and the upstream's
//! request id, which every gRPC response built from it carries back to the caller.

/// A decoded upstream answer and the upstream's request id.
#[derive(Debug)]
pub struct Reply<T> {
    /// The decoded body.
    pub body: T,
    /// The upstream's `x-request-id`, echoed to callers.
    pub request_id: Option<String>,
}

impl<T> Reply<T> {
    /// The same reply with its body translated by `f`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Reply<U> {
        Reply {
            body: f(self.body),
            request_id: self.request_id,
        }
    }

    /// The same reply with its body translated by `f`, which may find it unusable.
    pub fn try_map<U, E>(self, f: impl FnOnce(T) -> Result<U, E>) -> Result<Reply<U>, E> {
        Ok(Reply {
            body: f(self.body)?,
            request_id: self.request_id,
        })
    }

    /// The gRPC response carrying the body, echoing the upstream's request id to the
    /// caller as `x-upstream-request-id` metadata when it is a valid metadata value.
    pub fn into_response(self) -> tonic::Response<T> {
        let mut response = tonic::Response::new(self.body);
        if let Some(value) = self.request_id.and_then(|id| id.parse().ok()) {
            response
                .metadata_mut()
                .insert("x-upstream-request-id", value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_becomes_a_response_carrying_the_upstream_request_id() {
        let reply = Reply {
            body: 2,
            request_id: Some("req-7".into()),
        };
        let response = reply.map(|n| n * 21).into_response();
        assert_eq!(*response.get_ref(), 42);
        assert_eq!(
            response.metadata().get("x-upstream-request-id").unwrap(),
            "req-7"
        );
        let odd = Reply {
            body: (),
            request_id: Some("not\nan id".into()),
        };
        assert!(odd.into_response().metadata().is_empty());
        let failed: Result<Reply<u8>, &str> = Reply {
            body: (),
            request_id: None,
        }
        .try_map(|()| Err("unusable"));
        assert_eq!(failed.unwrap_err(), "unusable");
    }
}
