//! Flow decisions in Cedar: labelled data reaching a sink is denied unless a
//! policy permits that flow (`Mxp::Action::"flow"` on `Mxp::Source`), and a
//! permit can name the source's kind and name, the sink and its arguments.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use mxp_governance::flow::FlowSource;
use mxp_governance::policy::{
    Action, Arguments, Decision, EffectClass, PolicyEngine, PolicyLoadError, Remedy, Request,
    RequestContext, Resource, Zone, default_files,
};
use mxp_protocol::{Fingerprint, PrincipalId};
use serde_json::json;

fn flow(
    engine: &PolicyEngine,
    source: FlowSource,
    sink: &str,
    args: serde_json::Value,
) -> Decision {
    let ctx = RequestContext::new(
        "s-1".parse().unwrap(),
        Zone::Sandbox,
        EffectClass::ExternalWrite,
        1_700_000_000,
    )
    .with_args(Arguments::from_json(&args).unwrap())
    .with_sink(sink);
    let req = Request::new(
        PrincipalId::Peer(Fingerprint([1; 32])),
        Action::flow(),
        Resource::Source(source),
        ctx,
    );
    engine.decide(&req).decision
}

fn with(extra: &str) -> PolicyEngine {
    let mut files = default_files();
    files.push(("flow.cedar".into(), extra.into()));
    PolicyEngine::load(&files).unwrap()
}

#[test]
fn the_default_set_permits_no_flow_and_says_what_would() {
    let engine = PolicyEngine::default_set();
    let src = FlowSource::file("notes.txt", 0);
    assert_eq!(
        flow(
            &engine,
            src.clone(),
            "http.fetch",
            json!({"url": "https://x.example/"})
        ),
        Decision::Deny
    );
    let ctx = RequestContext::new(
        "s-1".parse().unwrap(),
        Zone::Sandbox,
        EffectClass::ExternalWrite,
        0,
    )
    .with_sink("http.fetch");
    let out = engine.decide(&Request::new(
        PrincipalId::Peer(Fingerprint([1; 32])),
        Action::flow(),
        Resource::Source(src),
        ctx,
    ));
    match out.remedy {
        Some(Remedy::MissingPermission { action, resource }) => {
            assert_eq!(action, "flow");
            assert_eq!(resource, "Mxp::Source::\"fs.read:notes.txt\"");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_permit_names_source_sink_and_arguments() {
    let engine = with(
        r#"
        @id("local.api_key_to_api")
        permit (principal, action == Mxp::Action::"flow", resource)
        when {
          resource.kind == "secret" && resource.name == "API_KEY" &&
          context has sink && context.sink == "http.fetch" &&
          context.args has url && context.args.url like "https://api.example/*"
        };
        @id("local.public_files_anywhere")
        permit (principal, action == Mxp::Action::"flow", resource)
        when { resource.kind == "fs.read" && resource.name like "public/*" };
        "#,
    );
    let key = FlowSource::secret("API_KEY");
    assert_eq!(
        flow(
            &engine,
            key.clone(),
            "http.fetch",
            json!({"url": "https://api.example/v1"})
        ),
        Decision::Allow
    );
    assert_eq!(
        flow(
            &engine,
            key.clone(),
            "http.fetch",
            json!({"url": "https://evil.example/"})
        ),
        Decision::Deny
    );
    assert_eq!(
        flow(
            &engine,
            key,
            "shell.exec",
            json!({"url": "https://api.example/v1"})
        ),
        Decision::Deny
    );
    assert_eq!(
        flow(
            &engine,
            FlowSource::secret("OTHER"),
            "http.fetch",
            json!({"url": "https://api.example/v1"})
        ),
        Decision::Deny
    );
    assert_eq!(
        flow(
            &engine,
            FlowSource::file("public/a.txt", 2),
            "shell.exec",
            json!({})
        ),
        Decision::Allow
    );
    assert_eq!(
        flow(
            &engine,
            FlowSource::file("private/a.txt", 2),
            "shell.exec",
            json!({})
        ),
        Decision::Deny
    );
}

#[test]
fn a_policy_misnaming_source_attributes_is_refused_at_load() {
    let mut files = default_files();
    files.push((
        "bad.cedar".into(),
        r#"permit (principal, action == Mxp::Action::"flow", resource) when { resource.path == "x" };"#.into(),
    ));
    let Err(err) = PolicyEngine::load(&files) else {
        panic!("a policy naming resource.path on a Source loaded")
    };
    assert!(matches!(err, PolicyLoadError::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains("bad.cedar:1:"), "{err}");
}
