//! deploy/Dockerfile builds: no container engine runs here, so the crate is compiled from
//! exactly the files its COPY lines bring into the build stage, laid out as they are
//! there (debug, in the suite's target directory), and the test fails if that build does.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{repo, run};

/// The `COPY <sources…> <dest>` lines of the stages that build (not `--from=` copies
/// out of another stage), with continuation lines joined.
fn copies(dockerfile: &str) -> Vec<(Vec<String>, String)> {
    let joined = dockerfile.replace("\\\n", " ");
    joined
        .lines()
        .map(str::trim)
        .filter_map(|line| line.strip_prefix("COPY "))
        .filter(|args| !args.contains("--from="))
        .map(|args| {
            let words: Vec<String> = args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .map(str::to_owned)
                .collect();
            assert!(words.len() >= 2, "COPY {args}: no destination");
            let (dest, sources) = words.split_last().unwrap();
            (sources.to_vec(), dest.clone())
        })
        .collect()
}

/// Copies like Docker: into `dest/` when it ends with `/` (or several sources), else to
/// `dest`; a directory's contents go into the destination directory. `cp -a` keeps
/// modification times, so an unchanged crate is not rebuilt.
fn docker_copy(context: &Path, root: &Path, sources: &[String], dest: &str) {
    let into_dir = dest.ends_with('/') || sources.len() > 1;
    for source in sources {
        let from = context.join(source);
        assert!(
            from.exists(),
            "deploy/Dockerfile copies {source}, which does not exist"
        );
        let to: PathBuf = if into_dir {
            root.join(dest).join(Path::new(source).file_name().unwrap())
        } else {
            root.join(dest)
        };
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let status = Command::new("cp")
            .arg("-a")
            .arg(if from.is_dir() {
                from.join(".")
            } else {
                from.clone()
            })
            .arg(&to)
            .status()
            .expect("cp runs");
        assert!(
            status.success(),
            "cp -a {} {}",
            from.display(),
            to.display()
        );
    }
}

/// The suite's own target directory (this binary is `<target>/<profile>/deps/adoption-…`),
/// so the build reuses the compiled dependencies.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .nth(3)
        .expect("the test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

#[test]
fn the_dockerfile_copies_parse() {
    let text = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let copied: Vec<String> = copies(&text)
        .into_iter()
        .flat_map(|(sources, _)| sources)
        .collect();
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        ".cargo",
        "build.rs",
        "proto",
        "src",
        "benches",
    ] {
        assert!(
            copied.iter().any(|c| c == needed),
            "{needed} not copied: {copied:?}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("USER ") && !l.contains("root")),
        "no non-root USER"
    );
    assert!(
        text.contains("HEALTHCHECK") && text.contains("\"batchgate\", \"health\""),
        "no HEALTHCHECK by `batchgate health`"
    );
    for from in text.lines().filter(|l| l.starts_with("FROM ")) {
        let image = from.split_whitespace().nth(1).unwrap();
        let tag = image
            .split(['@'])
            .next()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap();
        assert!(
            tag.chars().any(|c| c.is_ascii_digit()) && tag != "latest",
            "{from}: pin the base image by version"
        );
    }
}

#[tokio::test]
async fn the_crate_builds_from_what_the_dockerfile_copies() {
    let repo = repo();
    let text = std::fs::read_to_string(repo.join("deploy/Dockerfile")).unwrap();
    // Cargo identifies a path package by its path relative to its workspace root, so
    // the copy's units are the suite's own: with every file there (and `cp -a`'s
    // modification times) the build is fresh in a second or two; a file the Dockerfile
    // forgets makes it stale, and the rebuild fails (checked by deleting proto/ and
    // src/sim/ from the copy). A fixed place keeps one copy, not one per run.
    let target = target_dir();
    // Outside the repository: Cargo reads `.cargo/config.toml` in every parent directory
    // and concatenates their arrays, so a copy under target/ would get the repository's
    // `rustflags` twice (every dependency rebuilt, four minutes) and would hide a
    // Dockerfile that forgets `.cargo`. One place per checkout, keyed by its target dir.
    let root = std::env::temp_dir().join(format!(
        "batchgate-dockerfile-context-{:016x}",
        stable_hash(&target)
    ));
    let tokio_builds_before = tokio_builds(&target);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    for (sources, dest) in copies(&text) {
        docker_copy(&repo, &root, &sources, &dest);
    }
    let started = Instant::now();
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        // The binary's code, from the copied files only. `test --no-run` rather than
        // `build`: it resolves features with the dev-dependencies, as the suite's own
        // build did, so every compiled dependency is reused (a plain `build` would
        // rebuild tokio and all above it without `test-util`), and it leaves the suite's
        // target/debug/batchgate, which other tests run, alone.
        .args([
            "test",
            "--no-run",
            "--locked",
            "--bin",
            "batchgate",
            "--quiet",
        ])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target);
    // The test harness's own CARGO_PKG_NAME, CARGO_MANIFEST_DIR, OUT_DIR, … are not the
    // environment the suite's build ran in: build scripts that watch them (ring's does)
    // would run again, and the dependencies be rebuilt here and once more by the next
    // `cargo test`. Cargo's own settings stay.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let cargo_setting = [
            "CARGO_HOME",
            "CARGO_INCREMENTAL",
            "CARGO_BUILD_",
            "CARGO_PROFILE_",
            "CARGO_NET_",
            "CARGO_HTTP_",
            "CARGO_REGISTRIES_",
            "CARGO_REGISTRY_",
            "CARGO_TERM_",
            "CARGO_ENCODED_RUSTFLAGS",
        ]
        .iter()
        .any(|keep| name.starts_with(keep));
        if (name.starts_with("CARGO_") && !cargo_setting)
            || name.starts_with("NEXTEST")
            || name.starts_with("__NEXTEST")
            || name == "OUT_DIR"
        {
            command.env_remove(name.as_ref());
        }
    }
    run(
        "cargo test --no-run --locked --bin batchgate, from the files deploy/Dockerfile copies",
        command,
        Duration::from_secs(900),
    )
    .await;
    eprintln!(
        "built from the Dockerfile's files in {:?}",
        started.elapsed()
    );
    assert_eq!(
        tokio_builds(&target),
        tokio_builds_before,
        "the Dockerfile's build compiled the dependencies again: its flags or features \
         differ from the suite's (a `.cargo/config.toml` read twice, or not copied)"
    );
}

/// How many differently configured builds of tokio the target directory holds.
fn tokio_builds(target: &Path) -> usize {
    std::fs::read_dir(target.join("debug/deps"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.starts_with("libtokio-") && name.ends_with(".rlib")
                })
                .count()
        })
        .unwrap_or(0)
}

fn stable_hash(path: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    // `DefaultHasher::new()` has fixed keys: the same path gives the same name each run.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut hasher);
    hasher.finish()
}
