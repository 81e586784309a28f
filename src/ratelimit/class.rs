//! Which limit a gRPC method counts against: every method of the gateway's services has a
//! class (create, read, watch, results); health and reflection are never limited.

use std::fmt;

/// A class of methods sharing one rate limit per tenant.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Calls that start or change work upstream: Create*, Add*, Cancel*.
    Create,
    /// Reads of state: Get*, List*, CheckAuth, GetQuotas.
    Read,
    /// Progress streams: Watch*.
    Watch,
    /// Results, streamed or paged: *Results*.
    Results,
}

impl Class {
    /// Every class, in a fixed order.
    pub const ALL: [Class; 4] = [Class::Create, Class::Read, Class::Watch, Class::Results];

    /// `create`, `read`, `watch` or `results`: the name used in configuration and keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Create => "create",
            Class::Read => "read",
            Class::Watch => "watch",
            Class::Results => "results",
        }
    }

    /// Its index in [`Class::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The upstream whose service a method belongs to (whose managed key a caller without
/// credentials would use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `batchgate.sutro.v1.JobService`.
    Sutro,
    /// `batchgate.xai.v1.BatchService`.
    Xai,
}

/// What the limiter needs to know about one method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method {
    /// The limit it counts against.
    pub class: Class,
    /// Whether it answers with a long-lived stream, held against the stream cap.
    pub stream: bool,
    /// Its service.
    pub service: Service,
}

/// The method of a request path (`/<package>.<Service>/<Method>`); `None` for health,
/// reflection and any path that is not one of the gateway's own methods.
pub fn classify(path: &str) -> Option<Method> {
    let (service, name) = path.strip_prefix('/')?.split_once('/')?;
    let service = match service {
        "batchgate.sutro.v1.JobService" => Service::Sutro,
        "batchgate.xai.v1.BatchService" => Service::Xai,
        _ => return None,
    };
    // Results first: GetJobResults is a results call, not a read.
    let class = if name.contains("Results") {
        Class::Results
    } else if name.starts_with("Watch") {
        Class::Watch
    } else if ["Create", "Add", "Cancel"]
        .iter()
        .any(|p| name.starts_with(p))
    {
        Class::Create
    } else if name.starts_with("Get") || name.starts_with("List") || name == "CheckAuth" {
        Class::Read
    } else {
        return None;
    };
    // The server-streaming methods (a unit test checks this against the protos).
    let stream = matches!(
        name,
        "WatchJob" | "WatchBatch" | "GetJobResults" | "StreamBatchResults"
    );
    Some(Method {
        class,
        stream,
        service,
    })
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn methods_map_to_their_classes() {
        let cases = [
            ("/batchgate.sutro.v1.JobService/CreateJob", Class::Create),
            ("/batchgate.sutro.v1.JobService/CancelJob", Class::Create),
            (
                "/batchgate.xai.v1.BatchService/AddBatchRequests",
                Class::Create,
            ),
            ("/batchgate.sutro.v1.JobService/GetJobStatus", Class::Read),
            ("/batchgate.sutro.v1.JobService/ListJobs", Class::Read),
            ("/batchgate.sutro.v1.JobService/CheckAuth", Class::Read),
            ("/batchgate.sutro.v1.JobService/GetQuotas", Class::Read),
            (
                "/batchgate.xai.v1.BatchService/ListBatchRequestMetadata",
                Class::Read,
            ),
            ("/batchgate.sutro.v1.JobService/WatchJob", Class::Watch),
            ("/batchgate.xai.v1.BatchService/WatchBatch", Class::Watch),
            (
                "/batchgate.sutro.v1.JobService/GetJobResults",
                Class::Results,
            ),
            (
                "/batchgate.sutro.v1.JobService/GetJobResultsUrl",
                Class::Results,
            ),
            (
                "/batchgate.xai.v1.BatchService/ListBatchResults",
                Class::Results,
            ),
            (
                "/batchgate.xai.v1.BatchService/StreamBatchResults",
                Class::Results,
            ),
        ];
        for (path, class) in cases {
            assert_eq!(classify(path).map(|m| m.class), Some(class), "{path}");
        }
    }

    #[test]
    fn health_reflection_and_strangers_are_never_limited() {
        for path in [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            "/batchgate.sutro.v1.JobService",
            "/other.Service/CreateThing",
            "",
        ] {
            assert_eq!(classify(path), None, "{path}");
        }
    }

    /// Every method in the served descriptor set has a class, and the stream flag
    /// matches its declared server streaming: a new RPC cannot slip by unlimited.
    #[test]
    fn every_served_method_is_classified() {
        let set = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set decodes");
        let mut seen = 0;
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{package}.{}/{}", service.name(), method.name());
                    let found = classify(&path).unwrap_or_else(|| panic!("{path} has no class"));
                    assert_eq!(found.stream, method.server_streaming(), "{path}");
                    seen += 1;
                }
            }
        }
        assert!(seen >= 19, "only {seen} methods in the descriptor set");
    }
}
