//! `mxp-node` as a child process refusing tool configurations it cannot
//! use: exit code 2, the key named, the reason given, before it listens.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{NODE_BIN, run};

/// A node.toml for `dir` with `extra` appended (sections and agents).
fn write_config(dir: &Path, extra: &str) {
    std::fs::write(
        dir.join("node.toml"),
        format!("[node]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[metrics]\nlisten = \"\"\n{extra}"),
    )
    .unwrap();
}

fn refused(dir: &Path, key: &str, reason: &str) {
    let out = run(NODE_BIN, &["--config", "node.toml"], dir, &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains(key), "{key}: {out:?}");
    assert!(out.stderr.contains(reason), "{reason}: {out:?}");
    assert!(!out.stdout.contains("listening"), "{out:?}");
}

#[test]
fn a_secrets_file_others_may_read_is_refused_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir(d.join("files")).unwrap();
    let secrets = d.join("secrets.toml");
    std::fs::write(&secrets, "API = \"hunter2-canary\"\n").unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_config(
        d,
        &format!(
            "[broker]\nfs_root = {:?}\nsecrets_file = \"secrets.toml\"\n[[agents]]\nname = \"a\"\ntools = [\"fs.read\"]\n",
            d.join("files")
        ),
    );
    refused(d, "broker.secrets_file", "mode 644");
    let out = run(NODE_BIN, &["--config", "node.toml"], d, &[]);
    assert!(!out.stderr.contains("hunter2"), "{out:?}");
    // 0600: accepted (the node starts; --check does not open files, so
    // the refusal above came from the start).
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(NODE_BIN, &["--config", "node.toml", "--check"], d, &[]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn an_fs_root_that_does_not_exist_is_refused_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_config(
        d,
        &format!(
            "[broker]\nfs_root = {:?}\n[[agents]]\nname = \"a\"\ntools = [\"fs.read\"]\n",
            d.join("no-such-folder")
        ),
    );
    refused(d, "broker.fs_root", "cannot be opened as a folder");
}

#[test]
fn a_relative_shell_program_is_refused_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_config(
        d,
        "[broker]\nshell_enabled = true\nshell_allow = [\"/bin/echo\", \"ls\"]\n[[agents]]\nname = \"a\"\ntools = [\"shell.exec\"]\n",
    );
    refused(d, "broker.shell_allow[1]", "not an absolute path");
    // --check finds it too: it needs no file.
    let out = run(NODE_BIN, &["--config", "node.toml", "--check"], d, &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("broker.shell_allow[1]"), "{out:?}");
}

#[test]
fn a_tool_listed_but_not_configured_is_refused_naming_the_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_config(d, "[[agents]]\nname = \"a\"\ntools = [\"http.fetch\"]\n");
    refused(d, "agents[0].tools[0]", "needs broker.http_allow");
    // Through the environment as well.
    let out = run(
        NODE_BIN,
        &["--config", "node.toml", "--check"],
        d,
        &[("MXP_BROKER__HTTP_ALLOW", "[\"api.example.com\"]")],
    );
    assert_eq!(out.code, 0, "{out:?}");
}
