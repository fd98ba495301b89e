//! `mxp killswitch on|off <node> [--mesh]` (operators only).

use std::io::Write;

use clap::{Args, ValueEnum};
use mxp_protocol::ErrorCode;
use serde_json::{Value, json};

use super::remote::{self, NodeTarget};
use super::{CliError, write_out};

/// The long help of `mxp killswitch`.
pub const LONG_ABOUT: &str = "Turn a node's kill switch on or off (operators only).\n\n\
    While it is on, every external-write intent is denied, whatever the policy and any \
    approvals say; it is persisted, so it stays on across restarts. `on` returns only once \
    every tool executor of the node confirmed that no external write is in flight (and, with \
    --mesh, every reachable node of the mesh confirmed the same); it names each that did not \
    confirm within 5 seconds and exits 3.\n\n\
    With --mesh the node sets the switch of each mesh node it knows, calling as itself: a \
    node accepts that only if this node's fingerprint is among its node.operators.\n\n\
    Examples:\n  \
    mxp killswitch on mxp://127.0.0.1:9000\n  \
    mxp killswitch on mxp://127.0.0.1:9000 --mesh\n  \
    mxp killswitch off mxp://127.0.0.1:9000\n\n\
    Exit codes: 0 applied and confirmed; 1 local failure; 2 bad arguments; 3 the node \
    answered with an Error frame (denied), or did not get every confirmation; 4 no answer \
    within --timeout; 5 the node could not be reached.";

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Deny every external write.
    On,
    /// Release.
    Off,
}

/// Arguments of `mxp killswitch`.
#[derive(Debug, Args)]
pub struct KillSwitchArgs {
    /// `on` or `off`.
    #[arg(value_enum)]
    pub switch: Switch,
    /// The node.
    #[command(flatten)]
    pub target: NodeTarget,
    /// Also every reachable node of the mesh.
    #[arg(long)]
    pub mesh: bool,
}

/// The summary of a `killswitch.set` answer, and whether all confirmed.
///
/// # Errors
/// [`CliError::InvalidAnswer`] without `applied`.
pub fn summary(result: &Value) -> Result<(String, bool), CliError> {
    let applied = result
        .get("applied")
        .and_then(Value::as_bool)
        .ok_or_else(|| remote::unexpected("killswitch.set", "no \"applied\" in the result"))?;
    let on = result.get("on").and_then(Value::as_bool).unwrap_or(false);
    let list = |k: &str| result.get(k).and_then(Value::as_array).map_or(0, Vec::len);
    let mut text = format!(
        "kill switch {}: {} executors confirmed",
        if on { "on" } else { "off" },
        list("confirmed")
    );
    if list("nodes_confirmed") + list("nodes_unconfirmed") > 0 {
        text.push_str(&format!(
            ", {} mesh nodes confirmed",
            list("nodes_confirmed")
        ));
    }
    if !applied {
        text.push_str(&format!(
            "; NOT confirmed by agents {} and nodes {}",
            result.get("unconfirmed").unwrap_or(&json!([])),
            result.get("nodes_unconfirmed").unwrap_or(&json!([]))
        ));
    }
    text.push('\n');
    Ok((text, applied))
}

/// Runs `mxp killswitch`.
///
/// # Errors
/// As [`remote::call_node_agent`]; [`CliError::Remote`] (exit 3) when not
/// every executor or node confirmed.
pub fn run<W: Write>(args: &KillSwitchArgs, out: &mut W) -> Result<(), CliError> {
    let on = args.switch == Switch::On;
    let r = remote::call_node_agent(
        &args.target.connect,
        &args.target.node,
        "killswitch.set",
        json!({ "on": on, "mesh": args.mesh }),
    )?;
    let (text, applied) = summary(&r)?;
    if applied {
        write_out(out, text.as_bytes())
    } else {
        Err(CliError::Remote {
            code: ErrorCode::TIMEOUT,
            message: text.trim_end().to_owned(),
            retriable: true,
        })
    }
}
