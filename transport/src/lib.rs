//! Moving MXP frames: the in-process [`Bus`] and MXP over QUIC ([`Server`],
//! [`Client`]) with mutual TLS, limits and Call/Response correlation.
//!
//! One interface whatever the distance: an agent reads [`Envelope`]s from its
//! [`Mailbox`], whether they came from a component of the same node (moved,
//! not copied) or from a peer over QUIC (validated once, attributed to the
//! peer's certificate); [`Transport::call`] reaches an agent by its
//! `mxp://host:port/agent-id` URL, in-process when it lives here.
//!
//! See docs/PROTOCOL.md ("MXP over QUIC") for the stream mapping, error codes
//! and close codes, and docs/CONFIG.md for the limits.
#![forbid(unsafe_code)]

mod budget;
mod bus;
mod call;
mod client;
mod error;
mod identity;
mod limits;
mod principal;
mod reply_stream;
mod server;
mod session;
mod stats;
mod url;
mod wire;

use std::sync::Arc;
use std::time::Duration;

pub use budget::{BodyPermit, ByteBudget, OverBudget};
pub use bus::{AgentSender, Bus, Envelope, Mailbox, NODE_AGENT, Reply};
pub use call::interpret_answer;
pub use client::{AnswerStream, Client, StreamSender};
pub use error::{CallError, TransportError};
pub use identity::{ALPN, NodeIdentity, PeerId, PeerTrust, default_client_identity_dir};
pub use limits::{Limits, TokenBucket};
pub use principal::{NodeAuthority, Principal, RelayRefused};
pub use reply_stream::{AnswerPort, ReplyStream, STREAM_FRAMES};
pub use server::{Server, codes};
pub use stats::StatsSnapshot;
pub use url::{DEFAULT_PORT, MxpUrl};

use mxp_protocol::{Call, CallBody, Flags, Response, TypedPayload};

/// The one interface for Calls: to an agent on this node through the bus, to
/// any other over QUIC.
#[derive(Debug, Clone)]
pub struct Transport {
    bus: Bus,
    client: Arc<Client>,
    principal: Principal,
}

impl Transport {
    /// A transport over `bus` that reaches other nodes with `client`, calling
    /// as `principal` (on this node's bus; over QUIC the peer sees the
    /// client's certificate).
    pub fn new(bus: Bus, client: Arc<Client>, principal: Principal) -> Transport {
        Transport {
            bus,
            client,
            principal,
        }
    }

    /// The in-process bus.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The QUIC client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Calls the agent `url` names: in-process if it is registered on this
    /// node's bus (no encoding beyond the Call frame itself, no copy, no
    /// socket), over QUIC otherwise.
    ///
    /// # Errors
    /// [`CallError`] as [`Bus::call`] or [`Client::call`].
    ///
    /// # Cancel safety
    /// Dropping the future abandons the Call; the agent sees its caller gone.
    pub async fn call(
        &self,
        url: &MxpUrl,
        body: &CallBody,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        match url.agent() {
            Some(agent) if self.bus.contains(&agent) => {
                let secs = u32::try_from(timeout.as_millis().div_ceil(1000))
                    .unwrap_or(u32::MAX)
                    .max(1);
                let call = Call::json(agent, secs, body).map_err(TransportError::from)?;
                let id = self.bus.next_message_id();
                let frame = call
                    .to_frame(id, id, Flags::EMPTY)
                    .map_err(TransportError::from)?;
                self.bus.call(frame, &self.principal, timeout).await
            }
            _ => self.client.call(url, body, timeout).await,
        }
    }
}
