//! deploy/kubernetes/: valid against the Kubernetes schemas (kubernetes-validate, from
//! tests/tools/setup.sh), pods at the "restricted" Pod Security Standard, and every
//! BATCHGATE_* variable one the gateway reads.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::{assert_known_variables, repo, run, tool, yaml_documents};

fn manifests() -> Vec<PathBuf> {
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    files
}

fn resources() -> Vec<Value> {
    manifests()
        .iter()
        .flat_map(|f| yaml_documents(f))
        .filter(|d| !d.is_null())
        .collect()
}

fn of_kind<'a>(resources: &'a [Value], kind: &str) -> Vec<&'a Value> {
    resources.iter().filter(|r| r["kind"] == kind).collect()
}

#[tokio::test]
async fn manifests_are_valid_against_the_kubernetes_schemas() {
    let validate = tool(
        "BATCHGATE_KUBERNETES_VALIDATE",
        ".venv-tools/bin/kubernetes-validate",
        "tests/tools/setup.sh",
    );
    let mut command = Command::new(validate);
    command.arg("--strict").args(manifests());
    let out = run(
        "kubernetes-validate --strict deploy/kubernetes/*.yaml",
        command,
        Duration::from_secs(120),
    )
    .await;
    assert!(!out.contains("failed"), "{out}");
}

#[test]
fn pods_meet_the_restricted_pod_security_standard() {
    let resources = resources();
    let deployments = of_kind(&resources, "Deployment");
    assert!(!deployments.is_empty(), "no Deployment");
    for deployment in deployments {
        let pod = &deployment["spec"]["template"]["spec"];
        let pod_security = &pod["securityContext"];
        assert_eq!(pod_security["runAsNonRoot"], true, "pod runAsNonRoot");
        assert_eq!(
            pod_security["seccompProfile"]["type"], "RuntimeDefault",
            "pod seccompProfile"
        );
        assert!(
            pod_security["runAsUser"].as_u64().is_some_and(|u| u != 0),
            "pod runAsUser is not root"
        );
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert!(pod["hostNetwork"].is_null() && pod["hostPID"].is_null());
        let containers = pod["containers"]
            .as_array()
            .into_iter()
            .chain(pod["initContainers"].as_array())
            .flatten();
        for container in containers {
            let name = &container["name"];
            let security = &container["securityContext"];
            assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
            assert_ne!(security["privileged"], true, "{name}");
            assert_ne!(security["runAsNonRoot"], false, "{name}");
            assert_eq!(
                security["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{name}: drop ALL capabilities"
            );
            assert!(
                security["capabilities"]["add"].is_null(),
                "{name}: adds capabilities"
            );
            let seccomp = &security["seccompProfile"]["type"];
            assert!(
                seccomp.is_null() || seccomp == "RuntimeDefault" || seccomp == "Localhost",
                "{name}: seccomp {seccomp}"
            );
            let image = container["image"].as_str().unwrap();
            let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
            assert!(
                tag != "latest" && tag.chars().next().is_some_and(|c| c.is_ascii_digit()),
                "{name}: image {image} needs a version tag"
            );
        }
    }
}

#[test]
fn replicas_share_redis_and_are_kept_available() {
    let resources = resources();
    let account = of_kind(&resources, "ServiceAccount");
    assert_eq!(account.len(), 1);
    assert_eq!(account[0]["automountServiceAccountToken"], false);
    for kind in [
        "NetworkPolicy",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    ] {
        assert_eq!(of_kind(&resources, kind).len(), 1, "one {kind}");
    }
    let hpa = of_kind(&resources, "HorizontalPodAutoscaler")[0];
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2);

    // Every BATCHGATE_* variable (env and the ConfigMaps it pulls in) is one the gateway
    // reads; Redis and the collector are wired.
    let deployment = of_kind(&resources, "Deployment")[0];
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut vars: Vec<String> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let name = source["configMapRef"]["name"]
            .as_str()
            .expect("a ConfigMap");
        let map = of_kind(&resources, "ConfigMap")
            .into_iter()
            .find(|m| m["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("ConfigMap {name} is not in deploy/kubernetes/"));
        vars.extend(map["data"].as_object().unwrap().keys().cloned());
    }
    assert_known_variables("deploy/kubernetes", "serve", &vars);
    for needed in [
        "BATCHGATE_REDIS_URL",
        "BATCHGATE_OTLP_ENDPOINT",
        "BATCHGATE_LISTEN",
    ] {
        assert!(
            vars.iter().any(|v| v == needed),
            "{needed} is not set: {vars:?}"
        );
    }
    let redis = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "BATCHGATE_REDIS_URL")
        .unwrap();
    assert!(
        redis["valueFrom"]["secretKeyRef"].is_object(),
        "the Redis URL carries a password: from a Secret"
    );
}
