//! `buf lint` (STANDARD and COMMENTS, exceptions named in buf.yaml) and `buf format` are
//! clean on proto/, with the buf pinned in tests/node/package-lock.json.

use std::process::Command;
use std::time::Duration;

use crate::{repo, run, tool};

fn buf() -> Command {
    let buf = tool(
        "BATCHGATE_BUF",
        "tests/node/node_modules/.bin/buf",
        "tests/node/setup.sh",
    );
    let mut command = Command::new(buf);
    command.current_dir(repo());
    command
}

#[tokio::test]
async fn buf_lint_is_clean() {
    let mut command = buf();
    command.arg("lint");
    run("buf lint (see buf.yaml)", command, Duration::from_secs(120)).await;
}

#[tokio::test]
async fn buf_format_is_clean() {
    let mut command = buf();
    command.args(["format", "--diff", "--exit-code"]);
    run(
        "buf format --diff --exit-code (fix with `tests/node/node_modules/.bin/buf format -w`)",
        command,
        Duration::from_secs(120),
    )
    .await;
}
