//! Supply chain: pinned hashes, quarantine of tampered modules, verify/list reports.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{default_limits, dirs, echo_wat, pins, write_skill};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use mxp_skills::manifest::ManifestError;
use mxp_skills::supply::{self, QUARANTINED_METRIC, SkillStatus};
use mxp_skills::{RunnerConfig, SkillError, SkillRunner};

/// Counts increments of the quarantine counter only.
#[derive(Default)]
struct QuarantineCount(Arc<AtomicU64>);

struct Inc(Arc<AtomicU64>);

impl metrics::CounterFn for Inc {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::SeqCst);
    }
}

impl Recorder for QuarantineCount {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if key.name() == QUARANTINED_METRIC {
            Counter::from_arc(Arc::new(Inc(self.0.clone())))
        } else {
            Counter::noop()
        }
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn a_tampered_module_is_refused_quarantined_and_counted_while_a_good_one_loads() {
    let d = dirs();
    let bad_hash = write_skill(&d.skills, "tampered", &echo_wat(), &[], &default_limits());
    let good_hash = write_skill(&d.skills, "good", &echo_wat(), &[], &default_limits());
    let module = d.skills.join("tampered").join(supply::MODULE_FILE);
    let mut bytes = std::fs::read(&module).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&module, &bytes).unwrap();
    let actual = supply::sha256_hex(&bytes);
    let pins = pins(&[("tampered", &bad_hash), ("good", &good_hash)]);

    let recorder = QuarantineCount::default();
    let err = metrics::with_local_recorder(&recorder, || {
        supply::load(&d.skills.join("tampered"), &pins, &d.quarantine).unwrap_err()
    });
    let SkillError::HashMismatch {
        name,
        expected,
        actual: got,
        quarantined_to,
    } = &err
    else {
        panic!("expected HashMismatch, got {err}");
    };
    assert_eq!(
        (name.as_str(), expected.as_str(), got.as_str()),
        ("tampered", bad_hash.as_str(), actual.as_str())
    );
    assert_eq!(
        *quarantined_to,
        d.quarantine.join(format!("tampered-{actual}.wasm"))
    );
    assert_eq!(
        std::fs::read(quarantined_to).unwrap(),
        bytes,
        "the module is kept, not deleted"
    );
    assert!(!module.exists(), "the module left the skill directory");
    assert_eq!(recorder.0.load(Ordering::SeqCst), 1);
    assert!(err.to_string().contains(&bad_hash) && err.to_string().contains(&actual));

    let good = supply::load(&d.skills.join("good"), &pins, &d.quarantine).unwrap();
    let mut runner = SkillRunner::new(RunnerConfig {
        max_instances: 2,
        max_memory_bytes: 1 << 20,
    })
    .unwrap();
    runner.load(good).unwrap();
    let out = runner
        .invoke(
            "good",
            "run",
            b"ok",
            &mut (Box::new(mxp_skills::host::DenyAll) as Box<dyn mxp_skills::SkillHost>),
        )
        .unwrap();
    assert_eq!(out.bytes, b"ok");
}

#[test]
fn unpinned_disagreeing_and_misnamed_skills_are_refused_without_quarantine() {
    let d = dirs();
    let hash = write_skill(&d.skills, "echo", &echo_wat(), &[], &default_limits());
    let dir = d.skills.join("echo");
    let err = supply::load(&dir, &pins(&[]), &d.quarantine).unwrap_err();
    assert!(
        matches!(&err, SkillError::NotPinned { name } if name == "echo"),
        "{err}"
    );
    let other = "0".repeat(64);
    let err = supply::load(&dir, &pins(&[("echo", &other)]), &d.quarantine).unwrap_err();
    assert!(
        matches!(&err, SkillError::PinDisagrees { pinned, manifest, .. } if *pinned == other && *manifest == hash),
        "{err}"
    );
    std::fs::rename(&dir, d.skills.join("renamed")).unwrap();
    let err = supply::load(
        &d.skills.join("renamed"),
        &pins(&[("echo", &hash)]),
        &d.quarantine,
    )
    .unwrap_err();
    assert!(matches!(err, SkillError::NameMismatch { .. }), "{err}");
    assert!(!d.quarantine.exists(), "nothing was quarantined");
}

#[test]
fn hostile_manifests_are_named_errors() {
    let d = dirs();
    write_skill(&d.skills, "echo", &echo_wat(), &[], &default_limits());
    let manifest = d.skills.join("echo").join(supply::MANIFEST_FILE);
    let original = std::fs::read_to_string(&manifest).unwrap();
    type Case = (&'static str, fn(&ManifestError) -> bool);
    let cases: [Case; 4] = [
        ("sha256 = \"nothex\"", |e| {
            matches!(e, ManifestError::BadHash { .. })
        }),
        ("surprise = true", |e| {
            matches!(e, ManifestError::Syntax { .. })
        }),
        ("memory_bytes = 999999999999", |e| {
            matches!(
                e,
                ManifestError::LimitOutOfRange {
                    field: "memory_bytes",
                    ..
                }
            )
        }),
        ("\u{0}\u{1}garbage[[", |e| {
            matches!(e, ManifestError::Syntax { .. })
        }),
    ];
    for (edit, expected) in cases {
        let text = if edit.starts_with("sha256") {
            original
                .lines()
                .map(|l| if l.starts_with("sha256") { edit } else { l })
                .collect::<Vec<_>>()
                .join("\n")
        } else if edit.starts_with("memory_bytes") {
            original
                .lines()
                .map(|l| {
                    if l.starts_with("memory_bytes") {
                        edit
                    } else {
                        l
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        } else if edit.starts_with("surprise") {
            format!("{edit}\n{original}")
        } else {
            edit.to_owned()
        };
        std::fs::write(&manifest, text).unwrap();
        let err = supply::load(&d.skills.join("echo"), &pins(&[]), &d.quarantine).unwrap_err();
        assert!(
            matches!(&err, SkillError::Manifest(m) if expected(m)),
            "{edit}: {err}"
        );
    }
    std::fs::remove_file(&manifest).unwrap();
    let err = supply::load(&d.skills.join("echo"), &pins(&[]), &d.quarantine).unwrap_err();
    assert!(matches!(err, SkillError::Io { .. }), "{err}");
}

#[test]
fn verify_and_list_report_each_skill() {
    let d = dirs();
    let good = write_skill(
        &d.skills,
        "alpha",
        &echo_wat(),
        &["fs.read"],
        &default_limits(),
    );
    let stale = write_skill(&d.skills, "beta", &echo_wat(), &[], &default_limits());
    std::fs::write(
        d.skills.join("beta").join(supply::MODULE_FILE),
        b"\0asm\x01\0\0\0",
    )
    .unwrap();
    let pins = pins(&[("alpha", &good), ("beta", &stale), ("gamma", &good)]);

    let listed = supply::list(&d.skills, &pins).unwrap();
    let names: Vec<&str> = listed.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);
    assert!(matches!(listed[0].status, SkillStatus::Listed));
    assert!(matches!(listed[2].status, SkillStatus::Missing));
    assert!(
        d.skills.join("beta").join(supply::MODULE_FILE).exists(),
        "list hashes nothing"
    );

    let reports = supply::verify(&d.skills, &pins, &d.quarantine).unwrap();
    assert!(matches!(reports[0].status, SkillStatus::Verified));
    assert!(matches!(
        reports[1].status,
        SkillStatus::Refused(SkillError::HashMismatch { .. })
    ));
    assert!(matches!(reports[2].status, SkillStatus::Missing));
    let shown = reports[0].to_string();
    assert!(
        shown.contains("alpha 1.0.0") && shown.contains("verified") && shown.contains("fs.read"),
        "{shown}"
    );
    assert!(reports[1].to_string().contains("REFUSED"), "{}", reports[1]);
    assert!(reports[2].to_string().contains("MISSING"), "{}", reports[2]);
}
