//! The live audit stream on real nodes over QUIC on loopback, with a real
//! store (redb and the audit file): subscribers get every record in order,
//! then live; checkpoints verify against the records; a reconnect resumes
//! with no gap; a sequence number that does not exist is a clear error;
//! hostile subscribers (many subscriptions, a reader that never reads) are
//! bounded while the node keeps serving; witnesses cosign, and a forged
//! cosignature or a rewritten history gets none.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mxp_actors::audit::{
    AuditFollower, AuditSettings, Auditor, CheckpointSettings, FollowEvent, FollowFailure,
    FollowOptions, SubscriptionLimits,
};
use mxp_actors::store::{AuditLog, Store};
use mxp_actors::*;
use mxp_governance::audit::note::{Cosigner, Note, NoteSigner, NoteVerifier};
use mxp_governance::audit::{CheckpointSchedule, FollowError, TreeHead, merkle};
use mxp_protocol::{AgentId, CallBody, ErrorCode};
use mxp_transport::{Client, Limits, NODE_AGENT, NodeIdentity, PeerTrust};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(20);
const AGENT: AgentId = AgentId::from_bytes([1; 16]);
const ORIGIN: &str = "test.node/audit";

fn witness_key() -> Cosigner {
    Cosigner::new("witness.test/w1", &[2; 32]).unwrap()
}

struct Setup {
    dir: std::path::PathBuf,
    listen: SocketAddr,
    audit_seed: [u8; 32],
    limits: SubscriptionLimits,
    transport: Limits,
    more_operators: Vec<mxp_transport::PeerId>,
}

impl Setup {
    fn new(dir: &Path) -> Setup {
        Setup {
            dir: dir.to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            audit_seed: [1; 32],
            limits: SubscriptionLimits::default(),
            transport: Limits::default(),
            more_operators: Vec::new(),
        }
    }

    /// A node over the store in `self.dir`, signing a checkpoint every 10
    /// records (or 200 ms once the log grew), taking the test witness's
    /// cosignatures; `op` is its operator.
    async fn start(&self, op: &NodeIdentity) -> Node {
        let store = Store::open(&self.dir.join("store")).unwrap();
        let log = AuditLog::open(store.clone()).unwrap();
        let auditor = Auditor::start_with(
            log,
            AuditSettings {
                checkpoints: Some(CheckpointSettings {
                    origin: ORIGIN.into(),
                    signer: NoteSigner::new(ORIGIN, &self.audit_seed).unwrap(),
                    schedule: CheckpointSchedule {
                        every_events: 10,
                        every_ms: 200,
                    },
                    witnesses: vec![witness_key().verifier()],
                }),
                subscriptions: self.limits,
            },
        )
        .unwrap();
        let spec = AgentSpec {
            id: AGENT,
            name: "audited".into(),
            capabilities: vec![],
            planner: Arc::new(RulePlanner::default_rules()),
            tools: Arc::new(ToolRegistry::builtin()),
            hooks: Arc::new(NoHooks),
        };
        let mut s = NodeSettings::new(
            self.listen,
            NodeIdentity::generate().unwrap(),
            PeerTrust::AnyIdentified,
            vec![spec],
        );
        s.operators = vec![op.peer_id()];
        s.operators.extend(self.more_operators.iter().copied());
        s.limits = self.transport.clone();
        s.gate = Gate::new(
            Arc::new(CedarPolicy::default_set()),
            GateSettings::default(),
            Some(store),
        )
        .unwrap();
        s.audit = auditor;
        s.config_digest = Some([7; 32]);
        Node::start(s).await.unwrap()
    }
}

fn client(id: &NodeIdentity, limits: Limits) -> Arc<Client> {
    Arc::new(Client::new(id, PeerTrust::AnyIdentified, limits).unwrap())
}

async fn echo(c: &Client, n: &Node, i: u64) {
    c.call(
        &n.url().clone().with_agent(AGENT),
        &CallBody::new("echo", json!({ "i": i })),
        T,
    )
    .await
    .unwrap();
}

async fn control(
    c: &Client,
    n: &Node,
    method: &str,
    params: Value,
) -> Result<Value, mxp_transport::CallError> {
    c.call(
        &n.url().clone().with_agent(NODE_AGENT),
        &CallBody::new(method, params),
        T,
    )
    .await
    .map(|r| r.parse_body().unwrap().result)
}

async fn next(f: &mut AuditFollower) -> FollowEvent {
    tokio::time::timeout(T, f.next())
        .await
        .expect("the stream brought nothing in time")
        .unwrap()
}

/// Events until a record with `seq` arrives; returns them.
async fn until_seq(f: &mut AuditFollower, seq: u64) -> Vec<FollowEvent> {
    let mut out = Vec::new();
    loop {
        let e = next(f).await;
        let done = matches!(&e, FollowEvent::Record(r) if r.seq() >= seq);
        out.push(e);
        if done {
            return out;
        }
    }
}

fn seqs(events: &[FollowEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            FollowEvent::Record(r) => Some(r.seq()),
            _ => None,
        })
        .collect()
}

async fn head(c: &Client, n: &Node) -> u64 {
    control(c, n, "audit.read", json!({"from": 0, "limit": 1}))
        .await
        .unwrap()["next_seq"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_gets_every_record_in_order_then_live_and_every_checkpoint_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let op = NodeIdentity::generate().unwrap();
    let n = Setup::new(dir.path()).start(&op).await;
    let c = client(&op, Limits::default());
    for i in 0..10 {
        echo(&c, &n, i).await;
    }
    let before = head(&c, &n).await;
    let mut f = AuditFollower::new(c.clone(), FollowOptions::new(n.url().clone(), 0));
    let mut events = until_seq(&mut f, before - 1).await;
    // Live: records made after the subscription arrive too.
    for i in 10..20 {
        echo(&c, &n, i).await;
    }
    let after = head(&c, &n).await;
    events.extend(until_seq(&mut f, after - 1).await);
    let got = seqs(&events);
    assert_eq!(
        got,
        (0..after).collect::<Vec<_>>(),
        "every record once, in order"
    );
    // The records are the ones the log holds.
    let page = control(&c, &n, "audit.read", json!({"from": 0, "limit": 1000}))
        .await
        .unwrap();
    let hashes: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            FollowEvent::Record(r) => Some(hex::encode(r.hash())),
            _ => None,
        })
        .collect();
    let stored: Vec<String> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["hash"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(hashes, stored[..hashes.len()]);
    // Checkpoints came right after the records they cover, each checked
    // against them and extending the one before.
    let checkpoints: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            FollowEvent::Checkpoint { accepted, .. } => {
                assert!(accepted.records_checked, "{:?}", accepted.checkpoint);
                Some(accepted.checkpoint.tree.size)
            }
            _ => None,
        })
        .collect();
    assert!(checkpoints.len() >= 2, "{checkpoints:?}");
    assert!(
        checkpoints.windows(2).all(|w| w[0] < w[1]),
        "{checkpoints:?}"
    );
    for (i, e) in events.iter().enumerate() {
        if let FollowEvent::Checkpoint { accepted, .. } = e {
            let size = accepted.checkpoint.tree.size;
            let before: Vec<u64> = seqs(&events[..i]);
            assert_eq!(
                before.last().map(|s| s + 1),
                Some(size),
                "checkpoint {size} is right after its records"
            );
        }
    }
    // `audit.read {verify}` checks the chain against every checkpoint the
    // node signed.
    let v = control(&c, &n, "audit.read", json!({"verify": true}))
        .await
        .unwrap();
    assert!(
        v["checkpoints"].as_u64().unwrap() >= checkpoints.len() as u64,
        "{v}"
    );
    assert!(v["latest_checkpoint"].as_u64().unwrap() >= *checkpoints.last().unwrap());
    // The node keeps serving Calls throughout.
    echo(&c, &n, 99).await;
    n.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_resumes_from_the_next_seq_with_no_gap() {
    let dir = tempfile::tempdir().unwrap();
    let op = NodeIdentity::generate().unwrap();
    let n = Setup::new(dir.path()).start(&op).await;
    let c = client(&op, Limits::default());
    for i in 0..5 {
        echo(&c, &n, i).await;
    }
    let mut f = AuditFollower::new(c.clone(), FollowOptions::new(n.url().clone(), 0));
    let first = until_seq(&mut f, 8).await;
    // Kill the connection under the stream; records go on being made.
    c.disconnect(n.url());
    let other = client(&NodeIdentity::generate().unwrap(), Limits::default());
    for i in 5..10 {
        echo(&other, &n, i).await;
    }
    let target = head(&c, &n).await - 1;
    let mut rest = Vec::new();
    let mut resumed = None;
    let mut last = seqs(&first).last().copied();
    loop {
        let e = next(&mut f).await;
        match &e {
            // Records already on their way may arrive before the loss shows.
            FollowEvent::Record(r) if resumed.is_none() => last = Some(r.seq()),
            FollowEvent::Resumed { from, .. } => resumed = Some((*from, last)),
            _ => {}
        }
        let done = matches!(&e, FollowEvent::Record(r) if r.seq() >= target);
        rest.push(e);
        if done {
            break;
        }
    }
    let (from, last) = resumed.expect("the stream was resumed");
    assert_eq!(Some(from), last.map(|s| s + 1), "resumed from last seq + 1");
    let mut all = seqs(&first);
    all.extend(seqs(&rest));
    assert_eq!(all, (0..=target).collect::<Vec<_>>(), "no gap, no repeat");
    n.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_that_does_not_exist_is_a_clear_error_and_only_operators_subscribe() {
    let dir = tempfile::tempdir().unwrap();
    let op = NodeIdentity::generate().unwrap();
    let n = Setup::new(dir.path()).start(&op).await;
    let c = client(&op, Limits::default());
    let h = head(&c, &n).await;
    let url = n.url().clone().with_agent(NODE_AGENT);
    let e = c
        .call_stream(
            &url,
            &CallBody::new("audit.subscribe", json!({"from": h + 100})),
            T,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::INVALID_PAYLOAD, "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&format!("no audit record {}", h + 100))
            && text.contains("the log holds")
            && text.contains("(the next record) or below"),
        "{text}"
    );
    for bad in [json!({"from": "x"}), json!({"from": 0, "checkpoint": 5})] {
        let e = c
            .call_stream(&url, &CallBody::new("audit.subscribe", bad.clone()), T)
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::INVALID_PAYLOAD, "{bad}: {e}");
    }
    // From the head: accepted, nothing yet, then the next record live.
    let mut f = AuditFollower::new(c.clone(), FollowOptions::new(n.url().clone(), h));
    echo(&c, &n, 1).await;
    // (A checkpoint of exactly h records may come first.)
    let first = loop {
        if let FollowEvent::Record(r) = next(&mut f).await {
            break r.seq();
        }
    };
    assert_eq!(first, h);
    // A stranger may not follow the log.
    let stranger = client(&NodeIdentity::generate().unwrap(), Limits::default());
    let mut sf = AuditFollower::new(stranger, FollowOptions::new(n.url().clone(), 0));
    match tokio::time::timeout(T, sf.next()).await.unwrap() {
        Err(FollowFailure::Subscribe { source, .. }) => {
            assert_eq!(source.code(), ErrorCode::DENIED, "{source}");
        }
        other => panic!("{other:?}"),
    }
    // In process there is no stream of its own to answer on.
    let e = n
        .control("audit.subscribe", json!({"from": 0}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::UNSUPPORTED, "{e}");
    n.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_subscribers_are_bounded_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let op = NodeIdentity::generate().unwrap();
    let mut setup = Setup::new(dir.path());
    setup.limits = SubscriptionLimits {
        per_peer: 3,
        total: 4,
    };
    setup.transport = Limits {
        idle_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let (op2, op3) = (
        NodeIdentity::generate().unwrap(),
        NodeIdentity::generate().unwrap(),
    );
    setup.more_operators = vec![op2.peer_id(), op3.peer_id()];
    let n = setup.start(&op).await;
    let c = client(&op, setup.transport.clone());
    // Enough records that a reader that never reads fills its window.
    let big = "y".repeat(8 * 1024);
    for i in 0..200 {
        c.call(
            &n.url().clone().with_agent(AGENT),
            &CallBody::new("echo", json!({ "i": i, "pad": big })),
            T,
        )
        .await
        .unwrap();
    }
    let url = n.url().clone().with_agent(NODE_AGENT);
    let subscribe = |from: u64| CallBody::new("audit.subscribe", json!({ "from": from }));
    // Three streams that are never read: this principal's limit.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(c.call_stream(&url, &subscribe(0), T).await.unwrap());
    }
    let e = c.call_stream(&url, &subscribe(0), T).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::OVERLOADED, "{e}");
    assert!(
        e.to_string().contains("audit.max_subscriptions_per_peer"),
        "{e}"
    );
    // Another principal takes the node's last slot; a third finds none.
    let c2 = client(&op2, setup.transport.clone());
    held.push(c2.call_stream(&url, &subscribe(0), T).await.unwrap());
    let c3 = client(&op3, setup.transport.clone());
    let e = c3.call_stream(&url, &subscribe(0), T).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::OVERLOADED, "{e}");
    assert!(e.to_string().contains("audit.max_subscriptions)"), "{e}");
    // The node keeps serving Calls and control while they hang.
    echo(&c3, &n, 1).await;
    let status = control(&c3, &n, "node.status", Value::Null).await.unwrap();
    assert!(status["transport"]["connections"].as_u64().unwrap() >= 1);
    assert_eq!(status["audit_subscribers"], json!(4));
    // Readers that never read are cut off after idle_timeout; their slots
    // come back and a reading subscriber is served.
    let end = tokio::time::Instant::now() + T;
    loop {
        let status = control(&c3, &n, "node.status", Value::Null).await.unwrap();
        if status["audit_subscribers"] == json!(0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "stalled readers still held: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for s in &mut held {
        let end = loop {
            match tokio::time::timeout(T, s.next()).await.unwrap() {
                Ok(Some(_)) => {}
                other => break other,
            }
        };
        assert!(end.is_err(), "{end:?}");
    }
    drop(held);
    let mut f = AuditFollower::new(c3.clone(), FollowOptions::new(n.url().clone(), 0));
    let h = head(&c3, &n).await;
    let got = seqs(&until_seq(&mut f, h - 1).await);
    assert_eq!(got, (0..h).collect::<Vec<_>>());
    n.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_cosigns_what_it_verified_and_forged_cosignatures_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let op = NodeIdentity::generate().unwrap();
    let n = Setup::new(dir.path()).start(&op).await;
    let c = client(&op, Limits::default());
    for i in 0..5 {
        echo(&c, &n, i).await;
    }
    let mut opts = FollowOptions::new(n.url().clone(), 0);
    opts.witness = Some(witness_key());
    let mut f = AuditFollower::new(c.clone(), opts);
    let cosigned = loop {
        if let FollowEvent::Checkpoint {
            accepted,
            cosigned: Some(r),
        } = next(&mut f).await
        {
            break (accepted.checkpoint.tree.size, r.unwrap());
        }
    };
    assert_eq!(cosigned.1, vec!["witness.test/w1".to_owned()]);
    // The node shows the cosigned note of that checkpoint.
    let at = control(&c, &n, "audit.checkpoint", json!({ "size": cosigned.0 }))
        .await
        .unwrap();
    let vkey = NoteVerifier::parse(at["vkey"].as_str().unwrap()).unwrap();
    assert_eq!(at["origin"], json!(ORIGIN));
    assert_eq!(at["witnesses"], json!(["witness.test/w1"]));
    assert_eq!(at["size"].as_u64(), Some(cosigned.0));
    assert_eq!(at["cosigned_by"], json!(["witness.test/w1"]));
    let note = at["note"].as_str().unwrap().to_owned();
    let verified = Note::parse(note.as_bytes())
        .unwrap()
        .verify(&[vkey.clone(), witness_key().verifier()])
        .unwrap();
    assert_eq!(verified.verified.len(), 2, "{note}");
    let missing = control(
        &c,
        &n,
        "audit.checkpoint",
        json!({ "size": cosigned.0 + 1_000_000 }),
    )
    .await
    .unwrap_err();
    assert_eq!(missing.code(), ErrorCode::INVALID_PAYLOAD, "{missing}");

    // A follower that resumes with the checkpoint it accepted before gets
    // the next one with a proof from it; one that holds a root the node
    // never signed refuses the next one: it does not extend.
    let held =
        mxp_governance::audit::Checkpoint::parse(Note::parse(note.as_bytes()).unwrap().text())
            .unwrap()
            .tree;
    let resume = |last: TreeHead| {
        let mut o = FollowOptions::new(n.url().clone(), held.size);
        o.last_checkpoint = Some(last);
        o.reconnects = 0;
        AuditFollower::new(c.clone(), o)
    };
    let mut good = resume(held);
    let mut forked = resume(TreeHead {
        size: held.size,
        root: [0x5a; 32],
    });
    for i in 10..20 {
        echo(&c, &n, i).await;
    }
    loop {
        if let FollowEvent::Checkpoint { accepted, .. } = next(&mut good).await {
            assert!(accepted.checkpoint.tree.size > held.size);
            break;
        }
    }
    let refused = loop {
        match tokio::time::timeout(T, forked.next()).await.unwrap() {
            Ok(FollowEvent::Checkpoint { accepted, .. }) => {
                panic!(
                    "accepted {:?} after a root the node never signed",
                    accepted.checkpoint
                )
            }
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            refused,
            FollowFailure::Verify(FollowError::Checkpoint {
                source: mxp_governance::audit::WitnessRefusal::ProofInvalid(_),
                ..
            })
        ),
        "{refused}"
    );
    // A consistency proof from an earlier size verifies.
    let from = 3;
    let p = control(&c, &n, "audit.checkpoint", json!({ "from_size": from }))
        .await
        .unwrap();
    let h = |v: &Value| -> [u8; 32] {
        hex::decode(v.as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    };
    let proof: Vec<[u8; 32]> = p["proof"].as_array().unwrap().iter().map(h).collect();
    let page = control(&c, &n, "audit.read", json!({"from": 0, "limit": 1000}))
        .await
        .unwrap();
    let leaves: Vec<[u8; 32]> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| merkle::leaf_hash(&h(&r["hash"])))
        .collect();
    let cp_size = p["size"].as_u64().unwrap();
    let cp = mxp_governance::audit::Checkpoint::parse(
        Note::parse(p["note"].as_str().unwrap().as_bytes())
            .unwrap()
            .text(),
    )
    .unwrap();
    merkle::verify_consistency(
        &TreeHead {
            size: from,
            root: merkle::root(&leaves[..from as usize]),
        },
        &TreeHead {
            size: cp_size,
            root: cp.tree.root,
        },
        &proof,
    )
    .unwrap();
    let e = control(
        &c,
        &n,
        "audit.checkpoint",
        json!({ "from_size": cp_size + 1 }),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::INVALID_PAYLOAD, "{e}");

    // Forged cosignatures are refused, each naming why; nothing is stored.
    let stranger = client(&NodeIdentity::generate().unwrap(), Limits::default());
    let base = {
        let n = Note::parse(note.as_bytes()).unwrap();
        let text = n.text().to_owned();
        (n, text)
    };
    let unknown = Cosigner::new("witness.evil/w9", &[9; 32]).unwrap();
    let mut forged = base.0.clone();
    forged.push_signature(unknown.cosign(&base.1, 1).unwrap());
    let e = control(
        &stranger,
        &n,
        "audit.cosign",
        json!({"note": forged.encode()}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::INVALID_PAYLOAD, "{e}");
    assert!(e.to_string().contains("witness.evil/w9"), "{e}");
    let impostor = Cosigner::new("witness.test/w1", &[9; 32]).unwrap();
    let mut forged = base.0.clone();
    let mut sig = impostor.cosign(&base.1, 1).unwrap();
    sig.key_id = witness_key().verifier().key_id();
    forged.push_signature(sig);
    let e = control(
        &stranger,
        &n,
        "audit.cosign",
        json!({"note": forged.encode()}),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("does not verify"), "{e}");
    // A cosignature of a checkpoint the node never issued.
    let rewritten = mxp_governance::audit::Checkpoint::new(
        ORIGIN,
        TreeHead {
            size: cp_size,
            root: [0xab; 32],
        },
    )
    .sign(&NoteSigner::new(ORIGIN, &[1; 32]).unwrap())
    .unwrap();
    let mut other = Note::parse(rewritten.as_bytes()).unwrap();
    let t = other.text().to_owned();
    other.push_signature(witness_key().cosign(&t, 1).unwrap());
    let e = control(
        &stranger,
        &n,
        "audit.cosign",
        json!({"note": other.encode()}),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("issued no checkpoint"), "{e}");
    let again = control(&c, &n, "audit.checkpoint", json!({ "size": cosigned.0 }))
        .await
        .unwrap();
    assert_eq!(
        again["note"].as_str(),
        Some(note.as_str()),
        "nothing forged was stored"
    );
    n.shutdown(Duration::from_secs(1)).await;
}

/// A witness follows node A (records and checkpoints, cosigned) and keeps
/// following its address; returns the follower, A's key and address.
async fn witness_of_a(
    a_dir: &Path,
    op: &NodeIdentity,
) -> (AuditFollower, NoteVerifier, SocketAddr) {
    let a = Setup::new(a_dir).start(op).await;
    let c = client(op, Limits::default());
    for i in 0..5 {
        echo(&c, &a, i).await;
    }
    let mut opts = FollowOptions::new(a.url().clone(), 0);
    opts.witness = Some(witness_key());
    opts.reconnects = 20;
    let mut f = AuditFollower::new(c.clone(), opts);
    loop {
        if let FollowEvent::Checkpoint {
            cosigned: Some(r), ..
        } = next(&mut f).await
        {
            r.unwrap();
            break;
        }
    }
    let vkey = f.vkey().unwrap().clone();
    let listen = a.local_addr();
    a.shutdown(Duration::from_secs(1)).await;
    (f, vkey, listen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_rewrote_its_history_gets_no_cosignature() {
    let op = NodeIdentity::generate().unwrap();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // B: the same audit key, another and longer history (a rewritten log).
    {
        let b = Setup::new(b_dir.path()).start(&op).await;
        let other = client(&NodeIdentity::generate().unwrap(), Limits::default());
        for i in 0..30 {
            echo(&other, &b, 100 + i).await;
        }
        b.shutdown(Duration::from_secs(1)).await;
    }
    let (mut f, vkey, listen) = witness_of_a(a_dir.path(), &op).await;
    // B comes back at A's address, holding more records than the witness
    // verified from A.
    let mut b_setup = Setup::new(b_dir.path());
    b_setup.listen = listen;
    let b = b_setup.start(&op).await;
    // What A sent before it stopped may still arrive (its checkpoints are
    // A's, and B refuses cosignatures of them); from the moment the stream
    // resumes on B, nothing verifies.
    let mut on_b = false;
    let outcome = loop {
        match tokio::time::timeout(T, f.next()).await.unwrap() {
            Ok(FollowEvent::Resumed { .. }) => on_b = true,
            Ok(FollowEvent::Checkpoint { cosigned, .. }) if on_b => {
                panic!("a checkpoint of the rewrite was accepted: {cosigned:?}")
            }
            Ok(FollowEvent::Record(r)) if on_b => {
                panic!("a record of the rewrite was accepted: {}", r.seq())
            }
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert!(on_b, "{outcome}");
    // B's checkpoints do not extend A's, and its records do not link to A's.
    assert!(
        matches!(
            outcome,
            FollowFailure::Verify(FollowError::Record { .. } | FollowError::Checkpoint { .. })
        ),
        "{outcome}"
    );
    // B signs with the same key, and has no cosignature for any checkpoint.
    let c = client(&op, Limits::default());
    let at = control(&c, &b, "audit.checkpoint", json!({}))
        .await
        .unwrap();
    assert_eq!(
        NoteVerifier::parse(at["vkey"].as_str().unwrap()).unwrap(),
        vkey
    );
    assert_eq!(at["cosigned_by"], json!([]));
    b.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_log_was_cut_is_named_when_a_follower_resumes() {
    let op = NodeIdentity::generate().unwrap();
    let (a_dir, c_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut f, _, listen) = witness_of_a(a_dir.path(), &op).await;
    let verified_at_least = f.next_seq();
    // C, at A's address, holds only its first record.
    let mut c_setup = Setup::new(c_dir.path());
    c_setup.listen = listen;
    let cut = c_setup.start(&op).await;
    let outcome = loop {
        match tokio::time::timeout(T, f.next()).await.unwrap() {
            Ok(FollowEvent::Resumed { .. }) => panic!("resumed on a shorter log"),
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    match outcome {
        FollowFailure::Behind { verified, said } => {
            assert!(verified >= verified_at_least, "{verified}");
            assert!(said.contains("no audit record"), "{said}");
        }
        other => panic!("{other}"),
    }
    cut.shutdown(Duration::from_secs(1)).await;
}
