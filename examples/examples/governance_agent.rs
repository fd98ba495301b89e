//! `governance_agent`: a remote governance agent for an MXP node. It
//! follows the node's audit log live, verifies every record and signed
//! checkpoint as it arrives, cosigns the checkpoints it verified (a
//! witness), and, as an operator, turns the node's kill switch on when
//! denials burst.
//!
//! ```text
//! cargo run -p mxp-examples --example governance_agent -- mxp://127.0.0.1:9000 \
//!     [--identity-dir ./governance-agent] [--vkey VKEY] [--from SEQ] \
//!     [--witness-key FILE] [--witness-name NAME] [--denials K] [--window SECS]
//! ```
//!
//! * Its TLS identity lives in `--identity-dir` (made on first run); its
//!   fingerprint, printed at start, goes into the node's `node.operators`:
//!   following the log and the kill switch are for operators.
//! * With `--witness-key FILE` (a 32-byte Ed25519 seed, made on first run,
//!   mode 0600) it is a witness named `--witness-name`; its key, printed at
//!   start, goes into the node's `[audit] witnesses`.
//! * `--denials K --window SECS` (default 5 in 10 s): K policy denials
//!   recorded within SECS seconds of each other (record times) turn the kill
//!   switch on, once.
//!
//! It prints one line per record and per checkpoint, and stops (exit 1) at
//! the first thing that does not verify, saying what.

use std::collections::VecDeque;
use std::error::Error;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use mxp_actors::audit::{
    AuditFollower, EventKind, FollowEvent, FollowOptions, PolicyEffect, record_json,
};
use mxp_governance::audit::hex32;
use mxp_governance::audit::note::{Cosigner, NoteVerifier};
use mxp_protocol::CallBody;
use mxp_transport::{Client, Limits, MxpUrl, NODE_AGENT, NodeIdentity, PeerTrust};
use serde_json::{Value, json};

const USAGE: &str = "usage: governance_agent NODE [--identity-dir DIR] [--vkey VKEY] [--from SEQ]
                        [--witness-key FILE] [--witness-name NAME] [--denials K] [--window SECS]
  NODE                 the node, mxp://host:port
  --identity-dir DIR   this agent's TLS identity (default ./governance-agent)
  --vkey VKEY          the node's audit key (mxp-node prints it); else pinned on first use
  --from SEQ           the first record to follow (default 0)
  --witness-key FILE   cosign verified checkpoints with this 32-byte seed (made if missing)
  --witness-name NAME  the witness key's name (default governance-agent/witness)
  --denials K          denials that make a burst (default 5)
  --window SECS        ... within this many seconds (default 10)";

struct Args {
    node: MxpUrl,
    identity_dir: PathBuf,
    vkey: Option<NoteVerifier>,
    from: u64,
    witness_key: Option<PathBuf>,
    witness_name: String,
    denials: usize,
    window_ms: u64,
}

fn args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut node = None;
    let mut a = Args {
        node: MxpUrl::new("127.0.0.1", 9000, None),
        identity_dir: PathBuf::from("./governance-agent"),
        vkey: None,
        from: 0,
        witness_key: None,
        witness_name: "governance-agent/witness".into(),
        denials: 5,
        window_ms: 10_000,
    };
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--identity-dir" => a.identity_dir = value(&arg)?.into(),
            "--vkey" => {
                a.vkey = Some(NoteVerifier::parse(&value(&arg)?).map_err(|e| e.to_string())?);
            }
            "--from" => a.from = value(&arg)?.parse().map_err(|e| format!("--from: {e}"))?,
            "--witness-key" => a.witness_key = Some(value(&arg)?.into()),
            "--witness-name" => a.witness_name = value(&arg)?,
            "--denials" => {
                a.denials = value(&arg)?
                    .parse()
                    .map_err(|e| format!("--denials: {e}"))?;
            }
            "--window" => {
                let secs: u64 = value(&arg)?.parse().map_err(|e| format!("--window: {e}"))?;
                a.window_ms = secs.saturating_mul(1000);
            }
            "-h" | "--help" => return Err(String::new()),
            other if node.is_none() && !other.starts_with('-') => {
                node = Some(other.parse::<MxpUrl>().map_err(|e| e.to_string())?);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    a.node = node.ok_or("the node's URL is missing")?;
    if a.denials == 0 {
        return Err("--denials must be at least 1".into());
    }
    Ok(a)
}

/// Recent denials (record times, ms), and whether they made a burst.
struct DenialBurst {
    k: usize,
    window_ms: u64,
    times: VecDeque<(u64, u64)>,
    fired: bool,
}

impl DenialBurst {
    /// Counts a denial recorded at `time_ms` as record `seq`; the first and
    /// last record of a burst the first time one forms.
    fn denied(&mut self, seq: u64, time_ms: u64) -> Option<(u64, u64)> {
        self.times.push_back((seq, time_ms));
        while self
            .times
            .front()
            .is_some_and(|(_, t)| time_ms.saturating_sub(*t) > self.window_ms)
        {
            self.times.pop_front();
        }
        if self.fired || self.times.len() < self.k {
            return None;
        }
        self.fired = true;
        Some((self.times.front()?.0, seq))
    }
}

/// The witness's key: the seed in `path`, made (mode 0600) if missing.
fn witness(path: &PathBuf, name: &str) -> Result<Cosigner, Box<dyn Error>> {
    let mut seed = [0u8; 32];
    match std::fs::File::open(path) {
        Ok(mut f) => f.read_exact(&mut seed)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use ring::rand::SecureRandom;
            ring::rand::SystemRandom::new()
                .fill(&mut seed)
                .map_err(|_| "the system random source failed")?;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            opts.open(path)?.write_all(&seed)?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Cosigner::new(name, &seed)?)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("governance_agent: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("governance_agent: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn Error>> {
    // 1. Who this agent is: an operator of the node, and maybe a witness.
    let identity = NodeIdentity::load_or_create(&args.identity_dir)?;
    println!(
        "governance agent identity: {} (list it in the node's node.operators)",
        identity.peer_id()
    );
    let cosigner = match &args.witness_key {
        Some(path) => {
            let w = witness(path, &args.witness_name)?;
            println!(
                "witness key: {} (list it in the node's [audit] witnesses)",
                w.verifier().to_vkey()
            );
            Some(w)
        }
        None => None,
    };
    // A long-lived follower: a node that vanished is noticed within 6 s
    // (keep-alives every 2 s), then the stream is resumed when it is back.
    let limits = Limits {
        idle_timeout: Duration::from_secs(6),
        ..Limits::default()
    };
    let client = Arc::new(Client::new(&identity, PeerTrust::AnyIdentified, limits)?);

    // 2. Follow the log: every record and checkpoint arrives verified.
    let mut opts = FollowOptions::new(args.node.clone(), args.from);
    opts.vkey = args.vkey.clone();
    opts.witness = cosigner;
    opts.reconnects = 10;
    let mut follower = AuditFollower::new(client.clone(), opts);
    println!("following {} from record {}", args.node, args.from);
    let mut burst = DenialBurst {
        k: args.denials,
        window_ms: args.window_ms,
        times: VecDeque::new(),
        fired: false,
    };
    loop {
        match follower.next().await? {
            FollowEvent::Record(r) => {
                let j = record_json(&r);
                println!("{}", describe(&j));
                let e = r.event();
                let denied = matches!(
                    e.kind,
                    EventKind::PolicyDecision {
                        effect: PolicyEffect::Deny,
                        ..
                    }
                );
                // 3. A burst of denials: stop every external write.
                if denied && let Some((first, last)) = burst.denied(r.seq(), e.time_ms) {
                    println!(
                        "denial burst: {} denials within {} s (records {first} to {last}): turning the kill switch on",
                        burst.k,
                        burst.window_ms / 1000
                    );
                    let answer = client
                        .call(
                            &args.node.clone().with_agent(NODE_AGENT),
                            &CallBody::new("killswitch.set", json!({ "on": true })),
                            Duration::from_secs(30),
                        )
                        .await;
                    match answer {
                        Ok(r) => {
                            let applied = r
                                .parse_body()
                                .map(|b| b.result.get("applied") == Some(&json!(true)))
                                .unwrap_or(false);
                            println!("kill switch ON (confirmed by every executor: {applied})");
                        }
                        Err(e) => println!("kill switch NOT changed: {e}"),
                    }
                }
            }
            FollowEvent::Checkpoint { accepted, cosigned } => {
                let tree = accepted.checkpoint.tree;
                let witnessed = match cosigned {
                    Some(Ok(by)) => format!("; cosigned, the node lists {}", by.join(", ")),
                    Some(Err(e)) => format!("; the node refused the cosignature: {e}"),
                    None => String::new(),
                };
                println!(
                    "checkpoint {} root {} verified{}{witnessed}",
                    tree.size,
                    hex32(&tree.root),
                    if accepted.records_checked {
                        " against the records"
                    } else {
                        ""
                    }
                );
            }
            FollowEvent::Resumed { from, reason } => {
                println!("resumed from record {from} ({reason})");
            }
            _ => {}
        }
    }
}

/// One line for a record: sequence number, kind, and what it is about.
fn describe(r: &Value) -> String {
    let g = |p: &str| r.pointer(p).and_then(Value::as_str).unwrap_or("-");
    let seq = r.get("seq").and_then(Value::as_u64).unwrap_or(0);
    let mut line = format!("record {seq} {}", g("/kind/name"));
    for (label, path) in [
        ("effect", "/kind/effect"),
        ("outcome", "/kind/outcome"),
        ("tool", "/data/tool"),
        ("by", "/principal"),
    ] {
        if let Some(v) = r.pointer(path).and_then(Value::as_str) {
            line.push_str(&format!(" {label}={v}"));
        }
    }
    line
}
