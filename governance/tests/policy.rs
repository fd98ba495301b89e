//! The policy engine's behaviours: the default set, approvals, load errors
//! with positions, limits, and that only the authenticated principal counts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use mxp_governance::policy::{
    Action, ApprovalRequirement, Arguments, ArgumentsError, Control, Decision, EffectClass,
    MAX_ARGS_BYTES, MAX_ARGS_DEPTH, MAX_ARGS_VALUES, MAX_POLICY_FILE_BYTES, MAX_POLICY_FILES,
    Outcome, PolicyEngine, PolicyLoadError, Remedy, Request, RequestContext, Resource, Zone, check,
    default_files,
};
use mxp_protocol::{AgentId, Fingerprint, PrincipalId, PrincipalKind};
use serde_json::json;

const NOW: i64 = 1_700_000_000;

fn fp(n: u8) -> Fingerprint {
    Fingerprint([n; 32])
}
fn peer() -> PrincipalId {
    PrincipalId::Peer(fp(1))
}
fn operator() -> PrincipalId {
    PrincipalId::Operator(fp(2))
}
fn node() -> PrincipalId {
    PrincipalId::Node(fp(3))
}
fn agent() -> PrincipalId {
    PrincipalId::Agent {
        agent: AgentId::from_bytes([4; 16]),
        node: fp(3),
    }
}
fn all_principals() -> [PrincipalId; 4] {
    [peer(), operator(), node(), agent()]
}
fn ctx(effect: EffectClass) -> RequestContext {
    RequestContext::new("s-1".parse().unwrap(), Zone::Supervised, effect, NOW)
}
fn local() -> Resource {
    Resource::Node(fp(3))
}
fn an_agent() -> Resource {
    Resource::Agent {
        agent: AgentId::from_bytes([9; 16]),
        node: fp(3),
    }
}
fn req(p: PrincipalId, action: &str, resource: Resource, c: RequestContext) -> Request {
    Request::new(p, action.parse().unwrap(), resource, c)
}
fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
        .collect()
}
fn with_default(extra: &[(&str, &str)]) -> PolicyEngine {
    let mut all = default_files();
    all.extend(files(extra));
    PolicyEngine::load(&all).unwrap()
}
fn invalid(list: &[(&str, &str)]) -> Vec<mxp_governance::policy::PolicyDiagnostic> {
    match PolicyEngine::load(&files(list)) {
        Err(PolicyLoadError::Invalid { diagnostics }) => diagnostics,
        Err(other) => panic!("expected Invalid, got {other}"),
        Ok(_) => panic!("expected Invalid, it loaded"),
    }
}

// ---- the default set -------------------------------------------------------

#[test]
fn default_set_loads_and_is_what_default_set_returns() {
    let engine = PolicyEngine::load(&default_files()).unwrap();
    let s = engine.summary();
    assert_eq!((s.files, s.policies, s.permits, s.forbids), (3, 6, 5, 1));
    assert_eq!(s.approval_policies, 1);
    assert_eq!(
        s.unconstrained, 1,
        "the approval forbid applies to every action"
    );
    assert!(s.declared_tools.is_empty());
    assert_eq!(check(&default_files()).unwrap(), *s);
    assert_eq!(PolicyEngine::default_set().summary(), s);
}

#[test]
fn default_read_only_builtin_tools_are_open_to_every_principal() {
    let engine = PolicyEngine::default_set();
    for p in all_principals() {
        for tool in ["tool:echo", "tool:status"] {
            let out = engine.decide(&req(p, tool, local(), ctx(EffectClass::ReadOnly)));
            assert_eq!(out.decision, Decision::Allow, "{p:?} {tool}");
            assert_eq!(out.reasons, ["default.tools.read_only_builtins"]);
            assert_eq!(out.remedy, None);
        }
    }
}

#[test]
fn default_builtin_tools_are_denied_when_not_classed_read_only() {
    let engine = PolicyEngine::default_set();
    let out = engine.decide(&req(
        peer(),
        "tool:echo",
        local(),
        ctx(EffectClass::LocalWrite),
    ));
    assert_eq!(out.decision, Decision::Deny);
}

#[test]
fn default_node_status_and_agents_list_are_open_to_every_principal() {
    let engine = PolicyEngine::default_set();
    for p in all_principals() {
        for action in ["node.status", "agents.list"] {
            let out = engine.decide(&req(p, action, local(), ctx(EffectClass::ReadOnly)));
            assert_eq!(out.decision, Decision::Allow, "{p:?} {action}");
            assert_eq!(out.reasons, ["default.node.read"]);
        }
    }
}

#[test]
fn default_audit_following_is_for_operators_and_checkpoints_for_everyone() {
    let engine = PolicyEngine::default_set();
    let out = engine.decide(&req(
        operator(),
        "audit.subscribe",
        local(),
        ctx(EffectClass::ReadOnly),
    ));
    assert_eq!(out.reasons, ["default.node.operator_control"]);
    for p in [peer(), agent()] {
        let out = engine.decide(&req(
            p,
            "audit.subscribe",
            local(),
            ctx(EffectClass::ReadOnly),
        ));
        assert_eq!(out.decision, Decision::Deny, "{p:?}");
    }
    for p in all_principals() {
        for (action, effect) in [
            ("audit.checkpoint", EffectClass::ReadOnly),
            ("audit.cosign", EffectClass::LocalWrite),
        ] {
            let out = engine.decide(&req(p, action, local(), ctx(effect)));
            assert_eq!(out.decision, Decision::Allow, "{p:?} {action}");
            assert_eq!(out.reasons, ["default.node.witness"]);
        }
    }
}

#[test]
fn default_lifecycle_control_is_for_operators_only() {
    let engine = PolicyEngine::default_set();
    for action in ["agent.suspend", "agent.resume", "agent.retire"] {
        let out = engine.decide(&req(
            operator(),
            action,
            an_agent(),
            ctx(EffectClass::Control),
        ));
        assert_eq!(out.decision, Decision::Allow, "{action}");
        assert_eq!(out.reasons, ["default.node.operator_control"]);
        // The local node itself (in-process control) has an operator's rights.
        let out = engine.decide(&req(node(), action, an_agent(), ctx(EffectClass::Control)));
        assert_eq!(out.reasons, ["default.node.self_control"]);
        for p in [peer(), agent()] {
            let out = engine.decide(&req(p, action, an_agent(), ctx(EffectClass::Control)));
            assert_eq!(out.decision, Decision::Deny, "{p:?} {action}");
            assert_eq!(
                out.remedy,
                Some(Remedy::MissingPermission {
                    action: action.to_owned(),
                    resource: an_agent().to_string(),
                })
            );
        }
    }
}

#[test]
fn default_reload_killswitch_and_approvals_are_for_operators_only() {
    let engine = PolicyEngine::default_set();
    let cases = [
        ("policy.reload", local()),
        ("killswitch.set", local()),
        ("approvals.decide", Resource::Approval("a-1".into())),
        ("approvals.list", Resource::Approval("*".into())),
    ];
    for (action, resource) in cases {
        let out = engine.decide(&req(
            operator(),
            action,
            resource.clone(),
            ctx(EffectClass::Control),
        ));
        assert_eq!(out.decision, Decision::Allow, "{action}");
        let out = engine.decide(&req(
            node(),
            action,
            resource.clone(),
            ctx(EffectClass::Control),
        ));
        assert_eq!(out.decision, Decision::Allow, "the local node: {action}");
        for p in [peer(), agent()] {
            let out = engine.decide(&req(p, action, resource.clone(), ctx(EffectClass::Control)));
            assert_eq!(out.decision, Decision::Deny, "{p:?} {action}");
        }
    }
}

#[test]
fn default_denies_everything_else() {
    let engine = PolicyEngine::default_set();
    for p in all_principals() {
        // Forwarding is open: the destination decides the Call again.
        let out = engine.decide(&req(
            p,
            "mesh.forward",
            Resource::Node(fp(8)),
            ctx(EffectClass::Forward),
        ));
        assert_eq!(out.decision, Decision::Allow);
        assert_eq!(out.reasons, ["default.node.read"]);
        for (tool, effect) in [
            ("tool:fs.read", EffectClass::ReadOnly),
            ("tool:fs.write", EffectClass::LocalWrite),
            ("tool:http.post", EffectClass::ExternalWrite),
        ] {
            let out = engine.decide(&req(p, tool, Resource::Path("/tmp/x".into()), ctx(effect)));
            assert_eq!(out.decision, Decision::Deny, "{p:?} {tool}");
            assert!(matches!(out.remedy, Some(Remedy::MissingPermission { .. })));
        }
    }
}

#[test]
fn default_external_write_needs_an_operators_approval_once_permitted() {
    let engine = with_default(&[(
        "http.cedar",
        r#"@id("http.post") permit(principal, action == Mxp::Action::"tool:http.post", resource is Mxp::Host);"#,
    )]);
    let host = Resource::Host("example.org".into());
    let out = engine.decide(&req(
        agent(),
        "tool:http.post",
        host.clone(),
        ctx(EffectClass::ExternalWrite),
    ));
    assert_eq!(out.decision, Decision::RequireApproval);
    assert_eq!(out.reasons, ["default.external_write.operator_approval"]);
    assert_eq!(
        out.remedy,
        Some(Remedy::Approval {
            requirements: vec![ApprovalRequirement::new(PrincipalKind::Operator, 1)],
        })
    );
    let approved = ctx(EffectClass::ExternalWrite).approved_by(vec![operator()]);
    let out = engine.decide(&req(agent(), "tool:http.post", host, approved));
    assert_eq!(out.decision, Decision::Allow);
    assert_eq!(out.reasons, ["http.post"]);
}

// ---- approvals ---------------------------------------------------------------

const PERMIT_DEPLOY: &str =
    r#"@id("deploy") permit(principal, action == Mxp::Action::"tool:deploy", resource);"#;
const TWO_PERSON: &str = r#"
@id("deploy.two_operators")
@approval("operator")
@approvers("2")
forbid(principal, action == Mxp::Action::"tool:deploy", resource)
unless { context.approved };
"#;

#[test]
fn approval_annotation_gives_require_approval_with_count() {
    let engine = PolicyEngine::load(&files(&[
        ("a.cedar", PERMIT_DEPLOY),
        ("b.cedar", TWO_PERSON),
    ]))
    .unwrap();
    let out = engine.decide(&req(
        agent(),
        "tool:deploy",
        local(),
        ctx(EffectClass::ExternalWrite),
    ));
    assert_eq!(out.decision, Decision::RequireApproval);
    assert_eq!(out.reasons, ["deploy.two_operators"]);
    let Some(Remedy::Approval { requirements }) = out.remedy else {
        panic!("no approval remedy: {out:?}");
    };
    assert_eq!(
        requirements,
        [ApprovalRequirement::new(PrincipalKind::Operator, 2)]
    );
    let r = requirements[0];
    assert!(!r.is_satisfied_by(&[operator()]));
    assert!(
        !r.is_satisfied_by(&[operator(), operator()]),
        "distinct approvers"
    );
    assert!(
        !r.is_satisfied_by(&[operator(), peer()]),
        "of the right kind"
    );
    assert!(r.is_satisfied_by(&[operator(), PrincipalId::Operator(fp(5))]));

    let approved =
        ctx(EffectClass::ExternalWrite).approved_by(vec![operator(), PrincipalId::Operator(fp(5))]);
    let out = engine.decide(&req(agent(), "tool:deploy", local(), approved));
    assert_eq!(out.decision, Decision::Allow);
    assert_eq!(out.reasons, ["deploy"]);
}

#[test]
fn a_second_plain_forbid_makes_it_a_deny() {
    let plain = r#"@id("no.sandbox.deploy") forbid(principal, action == Mxp::Action::"tool:deploy", resource) when { context.zone == "sandbox" };"#;
    let engine = PolicyEngine::load(&files(&[
        ("a.cedar", PERMIT_DEPLOY),
        ("b.cedar", TWO_PERSON),
        ("c.cedar", plain),
    ]))
    .unwrap();
    let sandbox = RequestContext::new(
        "s-1".parse().unwrap(),
        Zone::Sandbox,
        EffectClass::ExternalWrite,
        NOW,
    );
    let out = engine.decide(&req(agent(), "tool:deploy", local(), sandbox.clone()));
    assert_eq!(out.decision, Decision::Deny);
    assert_eq!(out.reasons, ["deploy.two_operators", "no.sandbox.deploy"]);
    assert_eq!(out.remedy, None);
    // Approval does not lift the plain forbid.
    let out = engine.decide(&req(
        agent(),
        "tool:deploy",
        local(),
        sandbox.approved_by(vec![operator()]),
    ));
    assert_eq!(out.decision, Decision::Deny);
    assert_eq!(out.reasons, ["no.sandbox.deploy"]);
}

#[test]
fn approval_forbid_without_any_permit_is_a_deny() {
    let engine = PolicyEngine::load(&files(&[("b.cedar", TWO_PERSON)])).unwrap();
    let out = engine.decide(&req(
        agent(),
        "tool:deploy",
        local(),
        ctx(EffectClass::ExternalWrite),
    ));
    assert_eq!(out.decision, Decision::Deny);
    assert!(matches!(out.remedy, Some(Remedy::MissingPermission { .. })));
}

#[test]
fn approval_forbid_still_determining_when_approved_is_a_deny() {
    // An @approval forbid that does not test context.approved: approving
    // does not help, so it is a plain deny.
    let stubborn = r#"@id("stubborn") @approval("operator") forbid(principal, action == Mxp::Action::"tool:deploy", resource);"#;
    let engine =
        PolicyEngine::load(&files(&[("a.cedar", PERMIT_DEPLOY), ("b.cedar", stubborn)])).unwrap();
    let approved = ctx(EffectClass::ExternalWrite).approved_by(vec![operator()]);
    let out = engine.decide(&req(agent(), "tool:deploy", local(), approved));
    assert_eq!(out.decision, Decision::Deny);
    assert_eq!(out.remedy, None);
}

#[test]
fn budget_exceeded_is_a_remedy_of_the_same_type() {
    let out = Outcome::budget_exceeded("budget.session", NOW + 60);
    assert_eq!(out.decision, Decision::Deny);
    assert_eq!(
        out.remedy,
        Some(Remedy::BudgetExceeded {
            resets_at: NOW + 60
        })
    );
}

// ---- load errors -----------------------------------------------------------

#[test]
fn syntax_error_names_file_line_column_and_reason() {
    let d = invalid(&[
        ("ok.cedar", "permit(principal, action, resource);\n"),
        (
            "bad.cedar",
            "// a comment\npermit(principal, action, resource)\nwhen { context.zone == };\n",
        ),
    ]);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].file, "bad.cedar");
    assert_eq!((d[0].line, d[0].column), (3, 24), "{}", d[0]);
    assert!(d[0].reason.contains("unexpected token"), "{}", d[0].reason);
    assert!(d[0].to_string().starts_with("bad.cedar:3:24: "));
}

#[test]
fn unknown_attribute_names_file_line_column_and_reason() {
    let text = "permit(principal, action, resource);\n\n@id(\"p\")\npermit(principal, action == Mxp::Action::\"node.status\", resource)\n  when { context.nope == 1 };\n";
    let d = invalid(&[("x.cedar", text)]);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].file, "x.cedar");
    assert_eq!((d[0].line, d[0].column), (5, 10), "{}", d[0]);
    assert!(d[0].reason.contains("nope"), "{}", d[0].reason);
}

#[test]
fn schema_violations_are_reported() {
    // An unknown action, an unknown entity type, a type error, an optional
    // argument read without `has`.
    let cases = [
        r#"permit(principal, action == Mxp::Action::"node.statsu", resource);"#,
        r#"permit(principal is Mxp::User, action, resource);"#,
        r#"permit(principal, action, resource) when { context.now == "noon" };"#,
        r#"permit(principal, action == Mxp::Action::"tool:fs.read", resource) when { context.args.path like "/tmp/*" };"#,
    ];
    for text in cases {
        let d = invalid(&[("v.cedar", text)]);
        assert!(
            d.iter().all(|d| d.file == "v.cedar" && d.line == 1),
            "{text}: {d:?}"
        );
        assert!(d.iter().any(|d| d.column > 1), "{text}: {d:?}");
    }
}

#[test]
fn bad_annotations_are_errors_at_the_annotation() {
    let cases = [
        (
            "forbid(principal, action, resource);\n@approval(\"everyone\") forbid(principal, action, resource);",
            2,
            1,
        ),
        (
            "forbid(principal, action, resource);\n  @approval(\"operator\") @approvers(\"0\") forbid(principal, action, resource);",
            2,
            25,
        ),
        (
            "@approvers(\"2\") forbid(principal, action, resource);",
            1,
            1,
        ),
        (
            "@approval(\"operator\") permit(principal, action, resource);",
            1,
            1,
        ),
        ("@id(\"\") permit(principal, action, resource);", 1, 1),
    ];
    for (text, line, column) in cases {
        let d = invalid(&[("a.cedar", text)]);
        assert_eq!((d[0].line, d[0].column), (line, column), "{text}: {}", d[0]);
    }
}

#[test]
fn duplicate_ids_name_both_places() {
    let d = invalid(&[
        (
            "a.cedar",
            "@id(\"same\") permit(principal, action, resource);",
        ),
        (
            "b.cedar",
            "\n@id(\"same\") forbid(principal, action, resource);",
        ),
    ]);
    assert_eq!(
        (d[0].file.as_str(), d[0].line, d[0].column),
        ("b.cedar", 2, 1)
    );
    assert!(d[0].reason.contains("a.cedar:1:1"), "{}", d[0]);
}

#[test]
fn templates_are_rejected() {
    let d = invalid(&[(
        "t.cedar",
        "permit(principal, action, resource);\npermit(principal == ?principal, action, resource);",
    )]);
    assert_eq!((d[0].line, d[0].column), (2, 1), "{}", d[0]);
}

#[test]
fn ids_default_to_file_and_index() {
    let engine = PolicyEngine::load(&files(&[(
        "mine.cedar",
        "permit(principal, action == Mxp::Action::\"tool:status\", resource);\n\
         permit(principal, action == Mxp::Action::\"tool:echo\", resource);",
    )]))
    .unwrap();
    let out = engine.decide(&req(
        peer(),
        "tool:echo",
        local(),
        ctx(EffectClass::ReadOnly),
    ));
    assert_eq!(out.reasons, ["mine.cedar:1"]);
}

#[test]
fn file_limits_name_the_limit() {
    let many: Vec<(String, String)> = (0..=MAX_POLICY_FILES)
        .map(|i| (format!("{i}.cedar"), String::new()))
        .collect();
    let err = PolicyEngine::load(&many).err().unwrap();
    assert!(err.to_string().contains("MAX_POLICY_FILES"), "{err}");
    let big = vec![(
        "big.cedar".to_owned(),
        " ".repeat(MAX_POLICY_FILE_BYTES + 1),
    )];
    let err = PolicyEngine::load(&big).err().unwrap();
    assert!(err.to_string().contains("MAX_POLICY_FILE_BYTES"), "{err}");
    assert!(err.to_string().starts_with("big.cedar"), "{err}");
    let dup = files(&[("a.cedar", ""), ("a.cedar", "")]);
    assert!(matches!(
        PolicyEngine::load(&dup),
        Err(PolicyLoadError::DuplicateFile { .. })
    ));
}

#[test]
fn load_dir_reads_cedar_files_only() {
    let dir = std::env::temp_dir().join(format!("mxp-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in default_files() {
        std::fs::write(dir.join(name), text).unwrap();
    }
    std::fs::write(dir.join("notes.txt"), "not a policy").unwrap();
    let engine = PolicyEngine::load_dir(&dir);
    let missing = PolicyEngine::load_dir(&dir.join("nope"));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(engine.unwrap().summary().files, 3);
    assert!(matches!(missing, Err(PolicyLoadError::Io { .. })));
}

// ---- evaluation ----------------------------------------------------------------

#[test]
fn empty_set_denies() {
    let engine = PolicyEngine::empty();
    let out = engine.decide(&req(
        operator(),
        "node.status",
        local(),
        ctx(EffectClass::ReadOnly),
    ));
    assert_eq!(out.decision, Decision::Deny);
}

#[test]
fn arguments_cannot_change_the_principal() {
    let engine = PolicyEngine::default_set();
    let args = Arguments::from_json(&json!({
        "principal": operator().to_string(),
        "agent": operator().to_string(),
        "context": {"principal": operator().to_string()},
    }))
    .unwrap();
    let out = engine.decide(&req(
        peer(),
        "agent.suspend",
        an_agent(),
        ctx(EffectClass::Control).with_args(args.clone()),
    ));
    assert_eq!(out.decision, Decision::Deny);
    let (cedar, _) = engine
        .cedar_request(&req(
            peer(),
            "agent.suspend",
            an_agent(),
            ctx(EffectClass::Control).with_args(args),
        ))
        .unwrap();
    assert_eq!(
        cedar.principal().unwrap().to_string(),
        format!("Mxp::Peer::\"{}\"", peer())
    );
}

#[test]
fn arguments_map_to_a_record_and_type_errors_fail_closed() {
    let policy = r#"@id("small") permit(principal, action == Mxp::Action::"tool:fs.read", resource is Mxp::Path)
        when { context.args has count && context.args.count < 10 && resource.name like "/tmp/*" };"#;
    let engine = PolicyEngine::load(&files(&[("p.cedar", policy)])).unwrap();
    let ask = |args: serde_json::Value, path: &str| {
        let c = ctx(EffectClass::ReadOnly).with_args(Arguments::from_json(&args).unwrap());
        engine.decide(&req(peer(), "tool:fs.read", Resource::Path(path.into()), c))
    };
    assert_eq!(
        ask(
            json!({"count": 3, "ratio": 0.5, "x": null, "l": [1, 1, "a"]}),
            "/tmp/a"
        )
        .decision,
        Decision::Allow
    );
    assert_eq!(ask(json!({"count": 30}), "/tmp/a").decision, Decision::Deny);
    assert_eq!(
        ask(json!({"count": 3}), "/etc/passwd").decision,
        Decision::Deny
    );
    assert_eq!(ask(json!({}), "/tmp/a").decision, Decision::Deny);
    // `count` is a string: the permit errors, and an error is a deny.
    let out = ask(json!({"count": "3"}), "/tmp/a");
    assert_eq!(out.decision, Decision::Deny);
    assert_eq!(out.reasons.len(), 1);
    assert!(out.reasons[0].contains("small"), "{:?}", out.reasons);
    // A float is its JSON text; a huge integer too.
    assert_eq!(
        ask(json!({"count": 2.5}), "/tmp/a").decision,
        Decision::Deny
    );
    assert_eq!(
        ask(json!({"count": u64::MAX}), "/tmp/a").decision,
        Decision::Deny
    );
}

#[test]
fn argument_limits_name_the_limit() {
    let mut deep = json!(1);
    for _ in 0..MAX_ARGS_DEPTH {
        deep = json!({ "a": deep });
    }
    assert_eq!(
        Arguments::from_json(&deep).err(),
        Some(ArgumentsError::TooDeep {
            limit: MAX_ARGS_DEPTH
        })
    );
    let many = serde_json::Value::Array((0..=MAX_ARGS_VALUES).map(|i| json!(i)).collect());
    assert_eq!(
        Arguments::from_json(&json!({ "l": many })).err(),
        Some(ArgumentsError::TooManyValues {
            limit: MAX_ARGS_VALUES
        })
    );
    let long = "x".repeat(MAX_ARGS_BYTES);
    let err = Arguments::from_json(&json!({ "s": long })).err().unwrap();
    assert_eq!(
        err,
        ArgumentsError::TooManyBytes {
            limit: MAX_ARGS_BYTES
        }
    );
    assert!(err.to_string().contains("MAX_ARGS_BYTES"));
    // Just inside the depth limit, and a non-object top level.
    let mut ok = json!(1);
    for _ in 0..MAX_ARGS_DEPTH - 1 {
        ok = json!({ "a": ok });
    }
    assert!(Arguments::from_json(&ok).is_ok());
    assert!(Arguments::from_json(&json!("hi")).is_ok());
}

#[test]
fn agents_are_in_their_node_and_groups_cover_undeclared_tools() {
    let text = format!(
        r#"@id("my.agents") permit(principal in Mxp::Node::"{}", action in Mxp::Action::"tool", resource);
           @id("lifecycle") permit(principal is Mxp::Operator, action in Mxp::Action::"lifecycle", resource);"#,
        PrincipalId::Node(fp(3))
    );
    let engine = PolicyEngine::load(&files(&[("g.cedar", &text)])).unwrap();
    assert_eq!(
        engine.summary().unconstrained,
        2,
        "group constraints are not indexed"
    );
    let out = engine.decide(&req(
        agent(),
        "tool:never.named",
        local(),
        ctx(EffectClass::LocalWrite),
    ));
    assert_eq!(out.decision, Decision::Allow);
    assert_eq!(out.reasons, ["my.agents"]);
    let other = PrincipalId::Agent {
        agent: AgentId::from_bytes([4; 16]),
        node: fp(6),
    };
    assert_eq!(
        engine
            .decide(&req(
                other,
                "tool:echo",
                local(),
                ctx(EffectClass::ReadOnly)
            ))
            .decision,
        Decision::Deny
    );
    assert_eq!(
        engine
            .decide(&req(
                agent(),
                "node.status",
                local(),
                ctx(EffectClass::ReadOnly)
            ))
            .decision,
        Decision::Deny
    );
    assert_eq!(
        engine
            .decide(&req(
                operator(),
                "agent.retire",
                an_agent(),
                ctx(EffectClass::Control)
            ))
            .decision,
        Decision::Allow
    );
    assert_eq!(
        engine
            .decide(&req(
                operator(),
                "killswitch.set",
                local(),
                ctx(EffectClass::Control)
            ))
            .decision,
        Decision::Deny
    );
}

#[test]
fn an_agent_acting_on_itself_builds() {
    let engine = PolicyEngine::load(&files(&[("s.cedar", "permit(principal, action == Mxp::Action::\"agent.retire\", resource) when { principal == resource };")])).unwrap();
    let me = Resource::Agent {
        agent: AgentId::from_bytes([4; 16]),
        node: fp(3),
    };
    assert_eq!(
        engine
            .decide(&req(agent(), "agent.retire", me, ctx(EffectClass::Control)))
            .decision,
        Decision::Allow
    );
    assert_eq!(
        engine
            .decide(&req(
                agent(),
                "agent.retire",
                an_agent(),
                ctx(EffectClass::Control)
            ))
            .decision,
        Decision::Deny
    );
}

#[test]
fn actions_parse_and_reject() {
    assert_eq!(
        "tool:echo".parse::<Action>().unwrap(),
        Action::tool("echo").unwrap()
    );
    assert_eq!(
        "agent.suspend".parse::<Action>().unwrap(),
        Action::control(Control::AgentSuspend)
    );
    assert!("tool:".parse::<Action>().is_err());
    assert!("tool:a b".parse::<Action>().is_err());
    assert!("node.reboot".parse::<Action>().is_err());
    for c in Control::ALL {
        assert_eq!(c.name().parse::<Action>().unwrap(), Action::control(c));
    }
}

#[test]
fn engine_is_shareable_and_swappable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PolicyEngine>();
    let shared = std::sync::Arc::new(PolicyEngine::default_set());
    let clone = std::sync::Arc::clone(&shared);
    std::thread::spawn(move || clone.summary().policies)
        .join()
        .unwrap();
}
