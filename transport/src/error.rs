//! Errors of the transport crate.

use mxp_protocol::{DecodeError, EncodeError, ErrorCode};

/// What went wrong moving frames.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A URL is not of the form `mxp://host:port[/agent-id]`.
    #[error("invalid MXP URL {url:?}: {reason}")]
    InvalidUrl {
        /// The text given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A fingerprint is not 64 hex digits.
    #[error(
        "invalid peer fingerprint {text:?}: expected 64 hex digits (SHA-256 of the certificate's public key)"
    )]
    InvalidFingerprint {
        /// The text given.
        text: String,
    },
    /// Reading or writing the node identity failed.
    #[error("node identity in {path}: {reason}")]
    Identity {
        /// The file or folder.
        path: String,
        /// What failed.
        reason: String,
    },
    /// Building the TLS or QUIC configuration failed.
    #[error("TLS/QUIC configuration: {0}")]
    Config(String),
    /// Binding the UDP socket failed.
    #[error("cannot bind QUIC endpoint on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bus's node authority was taken already (once per bus, by the node).
    #[error(
        "this bus's node authority was already taken: only the node that owns a bus names principals"
    )]
    AuthorityTaken,
    /// An agent id is registered on the bus already.
    #[error("agent {0} is already registered on this node")]
    AlreadyRegistered(mxp_protocol::AgentId),
    /// No agent with this id is registered on the bus.
    #[error("no agent {0} on this node")]
    UnknownAgent(mxp_protocol::AgentId),
    /// The frame's bytes do not fit the agent's or the node's byte budget.
    #[error("agent {agent} is overloaded: the frame does not fit its byte budget ({reason})")]
    OverBudget {
        /// The agent.
        agent: mxp_protocol::AgentId,
        /// Which budget, and how full.
        reason: crate::budget::OverBudget,
    },
    /// The agent's mailbox is full.
    #[error("agent {0} is overloaded (mailbox full)")]
    Overloaded(mxp_protocol::AgentId),
    /// The agent's mailbox is closed (the agent stopped).
    #[error("agent {0} stopped")]
    AgentStopped(mxp_protocol::AgentId),
    /// Connecting to a peer failed.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The peer address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The connection or stream broke.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The caller of a Call answered by a stream closed its side: nothing
    /// more can be sent to it.
    #[error("the caller closed the answer stream")]
    CallerGone,
    /// A frame could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A frame from the peer could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Why a Call got no Response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The callee answered with an Error frame.
    #[error("{code}: {message}")]
    Remote {
        /// The Error frame's code.
        code: ErrorCode,
        /// Its message.
        message: String,
        /// Whether the same Call may succeed later.
        retriable: bool,
        /// The Error body's `details` (e.g. a denial's policies and remedy).
        details: Option<serde_json::Value>,
    },
    /// No answer arrived before the deadline.
    #[error("no response within {0:?}")]
    Timeout(std::time::Duration),
    /// The answer did not make sense (wrong type, wrong message id, bad frame).
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// The Call could not be sent or its answer read.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl CallError {
    /// The error code this failure maps to, as an Error frame would carry it.
    pub fn code(&self) -> ErrorCode {
        match self {
            CallError::Remote { code, .. } => *code,
            CallError::Timeout(_) => ErrorCode::TIMEOUT,
            CallError::InvalidResponse(_) => ErrorCode::MALFORMED_FRAME,
            CallError::Transport(TransportError::UnknownAgent(_)) => ErrorCode::UNKNOWN_AGENT,
            CallError::Transport(
                TransportError::Overloaded(_) | TransportError::OverBudget { .. },
            ) => ErrorCode::OVERLOADED,
            CallError::Transport(TransportError::AgentStopped(_)) => ErrorCode::AGENT_UNAVAILABLE,
            CallError::Transport(
                TransportError::Connect { .. } | TransportError::ConnectionLost(_),
            ) => ErrorCode::UNREACHABLE,
            CallError::Transport(_) => ErrorCode::INTERNAL,
        }
    }
}
