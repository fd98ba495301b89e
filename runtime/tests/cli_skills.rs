//! `mxp skills list|verify` as a child process on real skill folders: from
//! flags and from a node configuration, a tampered module refused and
//! quarantined, exit codes and JSON output.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{MXP_BIN, echo_wat, run, tamper, write_skill};
use serde_json::Value;

#[test]
fn list_and_verify_from_flags_and_from_a_node_configuration() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let skills = r.join("skills");
    let quarantine = r.join("quarantine");
    let good = write_skill(&skills, "good", &echo_wat(), &[]);
    let bad = write_skill(&skills, "bad", &echo_wat(), &["fs.read"]);
    let pins = format!("good={good},bad={bad}");

    // list: every manifest, the hash each declares; nothing hashed, so a
    // tampered module is not noticed yet.
    tamper(&skills, "bad");
    let out = run(
        MXP_BIN,
        &["skills", "list", "--dir", "skills", "--pins", &pins],
        r,
        &[],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("good 1.0.0 sha256 {good} pinned: listed")),
        "{out:?}"
    );
    assert!(out.stdout.contains("tools [fs.read]"), "{out:?}");
    assert!(
        out.stdout
            .contains("2 skill(s) in skills: 2 listed, 0 unreadable"),
        "{out:?}"
    );
    // Without pins the same folder lists, each skill NOT PINNED.
    let out = run(MXP_BIN, &["skills", "list", "--dir", "skills"], r, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.matches("NOT PINNED").count(), 2, "{out:?}");

    // verify: the good one verifies; the tampered one is refused and moved.
    let out = run(
        MXP_BIN,
        &[
            "skills",
            "verify",
            "--dir",
            "skills",
            "--pins",
            &pins,
            "--quarantine-dir",
            "quarantine",
        ],
        r,
        &[],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stdout.contains("good 1.0.0 pinned: verified"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("bad 1.0.0 pinned tools [fs.read]: REFUSED"),
        "{out:?}"
    );
    assert!(out.stdout.contains("moved to"), "{out:?}");
    assert!(
        out.stderr.contains("1 skill(s) refused or missing"),
        "{out:?}"
    );
    assert!(!skills.join("bad").join("skill.wasm").exists());
    let moved: Vec<String> = std::fs::read_dir(&quarantine)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(moved.len(), 1);
    assert!(
        moved[0].starts_with("bad-") && moved[0].ends_with(".wasm"),
        "{moved:?}"
    );

    // From a node configuration (and its MXP_ variables), as JSON: the
    // module is gone now, so bad is refused for it, and a pin with no
    // folder is missing.
    std::fs::write(
        r.join("node.toml"),
        format!(
            "[skills]\ndir = \"skills\"\nquarantine_dir = \"quarantine\"\npins = {{ good = \"{good}\", bad = \"{bad}\" }}\n"
        ),
    )
    .unwrap();
    let ghost = format!("{{ good = \"{good}\", bad = \"{bad}\", ghost = \"{good}\" }}");
    let out = run(
        MXP_BIN,
        &["skills", "verify", "--config", "node.toml", "--json"],
        r,
        &[("MXP_SKILLS__PINS", &ghost)],
    );
    assert_eq!(out.code, 2, "{out:?}");
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by = |name: &str| lines.iter().find(|l| l["name"] == name).unwrap().clone();
    assert_eq!(by("good")["status"], "verified");
    assert_eq!(by("good")["sha256"], good.as_str());
    assert_eq!(by("bad")["status"], "refused");
    assert!(by("bad")["reason"].as_str().unwrap().contains("skill.wasm"));
    assert_eq!(by("ghost")["status"], "missing");
    // The good skill alone verifies: exit 0.
    std::fs::remove_dir_all(skills.join("bad")).unwrap();
    let out = run(
        MXP_BIN,
        &[
            "skills",
            "verify",
            "--dir",
            "skills",
            "--pins",
            &format!("good={good}"),
            "--quarantine-dir",
            "quarantine",
        ],
        r,
        &[],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("1 skill(s) in skills: 1 verified, 0 refused or missing"),
        "{out:?}"
    );
}

#[test]
fn bad_arguments_and_configurations_exit_2_and_an_unreadable_folder_1() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let cases: &[(&[&str], &str)] = &[
        (&["skills", "list"], "--config node.toml, or --dir"),
        (
            &["skills", "list", "--dir", "s", "--pins", "x"],
            "NAME=SHA256",
        ),
        (
            &["skills", "list", "--dir", "s", "--pins", "x=abc"],
            "64 lower-case hex",
        ),
        (&["skills", "verify", "--dir", "s"], "--quarantine-dir"),
        (
            &["skills", "list", "--config", "nope.toml"],
            "cannot read nope.toml",
        ),
    ];
    for (args, said) in cases {
        let out = run(MXP_BIN, args, r, &[]);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains(said), "{args:?}: {out:?}");
    }
    // --config conflicts with --dir (clap's usage error, exit 2).
    let out = run(
        MXP_BIN,
        &["skills", "list", "--config", "a", "--dir", "b"],
        r,
        &[],
    );
    assert_eq!(out.code, 2, "{out:?}");
    // A configuration the node would refuse names the key; one without
    // skills says so.
    std::fs::write(r.join("bad.toml"), "[skills]\ndir = \"s\"\n").unwrap();
    let out = run(MXP_BIN, &["skills", "list", "--config", "bad.toml"], r, &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("skills.quarantine_dir"), "{out:?}");
    std::fs::write(r.join("none.toml"), "").unwrap();
    let out = run(
        MXP_BIN,
        &["skills", "list", "--config", "none.toml"],
        r,
        &[],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("configures no skills"), "{out:?}");
    // A folder that does not exist: a local failure.
    let out = run(MXP_BIN, &["skills", "list", "--dir", "missing"], r, &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("missing"), "{out:?}");
}
