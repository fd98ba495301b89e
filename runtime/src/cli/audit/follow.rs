//! `mxp audit follow <node>`: subscribe to a node's audit log and print
//! every record and checkpoint as it arrives, verifying each
//! (`mxp_actors::audit::AuditFollower`).

use std::io::Write;
use std::sync::Arc;

use clap::Args;
use mxp_actors::audit::{AuditFollower, FollowEvent, FollowFailure, FollowOptions, record_json};
use mxp_governance::audit::hex32;
use mxp_governance::audit::note::NoteVerifier;
use mxp_protocol::ErrorCode;
use serde_json::json;

use super::super::remote::{self, NodeTarget};
use super::super::{CliError, flush_out, write_out};
use super::line;

/// The long help of `mxp audit follow`.
pub const LONG_ABOUT: &str = "Follow a node's audit log live (operators only, by the default policy).\n\n\
    Subscribes with audit.subscribe and prints every record from --from on, one line each \
    (or JSON lines with --json), then each new record as soon as the node made it durable, \
    and each signed checkpoint right after the records it covers. Every record is checked \
    against the hash chain; every checkpoint against the node's audit key (--vkey, else the \
    key the node presents is pinned on first use and printed on stderr), the log's origin, \
    the last checkpoint accepted (a consistency proof) and, following from 0, the Merkle root \
    of the records received. A lost connection (a node that vanished is noticed within 6 s) is \
    resumed from the next sequence number, with \
    no gap. Runs until --count records were printed, the stream cannot be resumed, or Ctrl-C.\n\n\
    Examples:\n  \
    mxp audit follow mxp://127.0.0.1:9000\n  \
    mxp audit follow mxp://127.0.0.1:9000 --from 1200 --json\n  \
    mxp audit follow mxp://127.0.0.1:9000 --vkey '<name>+<hex key ID>+<base64 key>'\n\n\
    mxp-node prints its audit key at start (`audit checkpoint key: ...`); `mxp audit \
    checkpoint` prints it too.\n\n\
    Exit codes: 0 --count records printed; 1 the stream does \
    not verify (naming the record or checkpoint and the check that failed), the node \
    presents another audit key than --vkey, resuming finds fewer records than were already \
    verified (a cut or replaced log), or an answer that is not valid MXP; 2 bad \
    arguments; 3 the node answered with an Error frame (denied; a sequence number beyond the \
    log's head; too many subscriptions); 4 no answer within --timeout; 5 the node could not be \
    reached, or the stream was lost and could not be resumed.";

/// The follower's QUIC idle timeout (keep-alives every third of it).
const FOLLOW_IDLE: std::time::Duration = std::time::Duration::from_secs(6);

/// Arguments of `mxp audit follow`.
#[derive(Debug, Clone, Args)]
pub struct FollowArgs {
    /// The node.
    #[command(flatten)]
    pub target: NodeTarget,
    /// The first sequence number.
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// The node's audit verifier key, `<name>+<hex key ID>+<base64 key>`.
    #[arg(long, value_name = "VKEY", value_parser = parse_vkey)]
    pub vkey: Option<NoteVerifier>,
    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Print JSON lines: `{"record": {...}}` and `{"checkpoint": {...}}`.
    #[arg(long)]
    pub json: bool,
}

fn parse_vkey(text: &str) -> Result<NoteVerifier, String> {
    NoteVerifier::parse(text).map_err(|e| format!("{text:?} is not a verifier key: {e}"))
}

fn failure(e: FollowFailure, args: &FollowArgs) -> CliError {
    match e {
        FollowFailure::Subscribe { source, .. } => {
            remote::call_error(*source, &args.target.connect)
        }
        FollowFailure::Ended(m) => CliError::Connection {
            code: ErrorCode::UNREACHABLE,
            message: format!("the audit stream ended: {m}"),
        },
        other => CliError::InvalidAnswer {
            code: ErrorCode::INVALID_PAYLOAD,
            message: other.to_string(),
        },
    }
}

/// Runs `mxp audit follow`.
///
/// # Errors
/// See [`LONG_ABOUT`]'s exit codes.
pub fn run<W: Write>(args: &FollowArgs, out: &mut W) -> Result<(), CliError> {
    let (identity, dir) = remote::load_identity(args.target.connect.identity_dir.as_deref())?;
    let rt = remote::runtime()?;
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + args.target.connect.timeout;
        // A follower runs for long: a node that vanished (killed, its
        // machine gone) is noticed within FOLLOW_IDLE, not the default 30 s.
        let limits = mxp_transport::Limits {
            idle_timeout: FOLLOW_IDLE,
            ..mxp_transport::Limits::default()
        };
        let client = Arc::new(
            remote::connect_with(
                &args.target.connect,
                &identity,
                &dir,
                &args.target.node,
                deadline,
                limits,
            )
            .await?,
        );
        let mut opts = FollowOptions::new(args.target.node.clone(), args.from);
        opts.vkey = args.vkey.clone();
        opts.timeout = args.target.connect.timeout;
        let mut follower = AuditFollower::new(client.clone(), opts);
        let result = follow(args, &mut follower, out).await;
        client.close().await;
        result
    })
}

async fn follow<W: Write>(
    args: &FollowArgs,
    follower: &mut AuditFollower,
    out: &mut W,
) -> Result<(), CliError> {
    let mut printed = 0u64;
    let mut announced = false;
    loop {
        if args.count.is_some_and(|n| printed >= n) {
            return Ok(());
        }
        let event = match follower.next().await {
            Ok(e) => e,
            Err(e) => return Err(failure(e, args)),
        };
        if !announced {
            announced = true;
            if let Some(v) = follower.vkey().filter(|_| args.vkey.is_none()) {
                eprintln!(
                    "mxp: the node's audit key {} is pinned for this run (pass --vkey to pin it)",
                    v.to_vkey()
                );
            }
        }
        match event {
            FollowEvent::Record(r) => {
                let j = record_json(&r);
                let text = if args.json {
                    format!("{}\n", json!({ "record": j }))
                } else {
                    line(&j)
                };
                write_out(out, text.as_bytes())?;
                printed += 1;
            }
            FollowEvent::Checkpoint { accepted, .. } => {
                let tree = accepted.checkpoint.tree;
                let text = if args.json {
                    format!(
                        "{}\n",
                        json!({ "checkpoint": {
                            "size": tree.size,
                            "root": hex32(&tree.root),
                            "records_checked": accepted.records_checked,
                            "note": accepted.note.encode(),
                        }})
                    )
                } else {
                    format!(
                        "checkpoint {} root {} verified{}\n",
                        tree.size,
                        hex32(&tree.root),
                        if accepted.records_checked {
                            ", and matches the records received"
                        } else {
                            ""
                        }
                    )
                };
                write_out(out, text.as_bytes())?;
            }
            FollowEvent::Resumed { from, reason } => {
                eprintln!("mxp: resumed from record {from} ({reason})");
            }
            _ => {}
        }
        flush_out(out)?;
    }
}
