//! AgentRegister (binary, as the MXP spec lays it out), AgentDiscover and
//! AgentHeartbeat (JSON).

use std::net::{Ipv4Addr, SocketAddrV4};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{AgentId, TypedPayload, check_len, frame_of, from_json, to_json};
use crate::cursor::Reader;
use crate::{DecodeError, EncodeError, Flags, Frame, MessageType};

/// Longest agent name, in UTF-8 bytes.
pub const MAX_AGENT_NAME_LEN: usize = 256;
/// Most capabilities one agent may register.
pub const MAX_CAPABILITIES: usize = 256;
/// Longest capability name, in UTF-8 bytes.
pub const MAX_CAPABILITY_LEN: usize = 256;
/// Most agent ids in one heartbeat.
pub const MAX_HEARTBEAT_AGENTS: usize = 4096;

/// AgentRegister (`0x01`) payload, in the MXP spec's binary layout:
///
/// ```text
/// agent id          16 bytes (UUID)
/// name length        2 bytes, u16 LE  (1..=256)
/// name               UTF-8
/// capability count   2 bytes, u16 LE  (0..=256)
/// per capability:    u16 LE length (1..=256), UTF-8
/// endpoint           6 bytes: IPv4 address (4 octets, network order), port u16 LE
/// ```
///
/// An endpoint of `0.0.0.0:0` means "reach me on the connection this arrived on".
/// Identity does not come from this payload: a node attributes the registration
/// to the peer's TLS identity and refuses an id another peer owns.
///
/// ```
/// use mxp_protocol::{AgentId, AgentRegister, Flags, TypedPayload};
/// let reg = AgentRegister {
///     agent_id: AgentId::from_bytes([7; 16]),
///     name: "summariser".into(),
///     capabilities: vec!["text.summarise".into()],
///     endpoint: "127.0.0.1:9000".parse()?,
/// };
/// let frame = reg.to_frame(1, 1, Flags::EMPTY)?;
/// assert_eq!(AgentRegister::from_frame(&frame)?, reg);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRegister {
    /// The agent's id.
    pub agent_id: AgentId,
    /// A human-readable name, 1 to 256 bytes.
    pub name: String,
    /// What the agent can do, e.g. `fs.read`; each 1 to 256 bytes.
    pub capabilities: Vec<String>,
    /// Where the agent is reachable.
    pub endpoint: SocketAddrV4,
}

const REGISTER: &str = "AgentRegister";

impl AgentRegister {
    /// Bytes the encoded payload takes.
    pub fn encoded_len(&self) -> usize {
        16 + 2
            + self.name.len()
            + 2
            + self.capabilities.iter().map(|c| 2 + c.len()).sum::<usize>()
            + 6
    }

    fn check(&self) -> Result<(), EncodeError> {
        let too_long = |field, len, limit| EncodeError::LimitExceeded { field, len, limit };
        if self.name.is_empty() {
            return Err(EncodeError::InvalidValue {
                field: "agent name",
                reason: "must not be empty",
            });
        }
        if self.name.len() > MAX_AGENT_NAME_LEN {
            return Err(too_long("agent name", self.name.len(), MAX_AGENT_NAME_LEN));
        }
        if self.capabilities.len() > MAX_CAPABILITIES {
            return Err(too_long(
                "capability count",
                self.capabilities.len(),
                MAX_CAPABILITIES,
            ));
        }
        for c in &self.capabilities {
            if c.is_empty() {
                return Err(EncodeError::InvalidValue {
                    field: "capability",
                    reason: "must not be empty",
                });
            }
            if c.len() > MAX_CAPABILITY_LEN {
                return Err(too_long("capability", c.len(), MAX_CAPABILITY_LEN));
            }
        }
        Ok(())
    }

    /// Encodes the payload alone.
    ///
    /// # Errors
    /// [`EncodeError`] for an empty or over-long name or capability, or too many capabilities.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        self.check()?;
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(self.agent_id.as_bytes());
        // Lengths fit u16: checked against limits of 256 above.
        out.extend_from_slice(&(self.name.len() as u16).to_le_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&(self.capabilities.len() as u16).to_le_bytes());
        for c in &self.capabilities {
            out.extend_from_slice(&(c.len() as u16).to_le_bytes());
            out.extend_from_slice(c.as_bytes());
        }
        out.extend_from_slice(&self.endpoint.ip().octets());
        out.extend_from_slice(&self.endpoint.port().to_le_bytes());
        Ok(out)
    }

    /// Decodes the payload from a byte slice.
    ///
    /// # Errors
    /// `truncated`, `limit_exceeded`, `invalid_utf8`, `invalid_value` (empty
    /// name or capability) or `trailing_bytes`.
    pub fn decode_slice(payload: &[u8]) -> Result<AgentRegister, DecodeError> {
        let mut r = Reader::new(payload, REGISTER);
        let agent_id = AgentId::from_bytes(r.array()?);
        let name = r.str_u16("agent name", MAX_AGENT_NAME_LEN)?;
        if name.is_empty() {
            return Err(DecodeError::InvalidValue {
                field: "agent name",
                reason: "must not be empty",
            });
        }
        let count = usize::from(r.u16_le()?);
        check_len("capability count", count, MAX_CAPABILITIES)?;
        // Each capability takes at least 3 bytes; refuse a count the payload
        // cannot hold before reserving room for it.
        if count.saturating_mul(3) > r.remaining() {
            return Err(DecodeError::PayloadTruncated {
                what: REGISTER,
                needed: r.position() + count * 3 + 6,
                available: payload.len(),
            });
        }
        let mut capabilities = Vec::with_capacity(count);
        for _ in 0..count {
            let c = r.str_u16("capability", MAX_CAPABILITY_LEN)?;
            if c.is_empty() {
                return Err(DecodeError::InvalidValue {
                    field: "capability",
                    reason: "must not be empty",
                });
            }
            capabilities.push(c.to_owned());
        }
        let ip = Ipv4Addr::from(r.array::<4>()?);
        let port = r.u16_le()?;
        r.finish()?;
        Ok(AgentRegister {
            agent_id,
            name: name.to_owned(),
            capabilities,
            endpoint: SocketAddrV4::new(ip, port),
        })
    }
}

impl TypedPayload for AgentRegister {
    const MESSAGE_TYPE: MessageType = MessageType::AgentRegister;

    fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        AgentRegister::decode_slice(payload)
    }

    fn to_frame(&self, message_id: u64, trace_id: u64, flags: Flags) -> Result<Frame, EncodeError> {
        frame_of(
            Self::MESSAGE_TYPE,
            message_id,
            trace_id,
            flags,
            &[&self.encode()?],
        )
    }
}

/// AgentDiscover (`0x02`) payload: a JSON object.
///
/// ```json
/// {"capability": "fs.read", "limit": 32, "after": "67e55044-…"}
/// ```
///
/// The node answers with a Response whose body's `result` is a [`DiscoverResult`],
/// one page of agents in id order; `after` (the previous page's `next`)
/// asks for the page that follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DiscoverRequest {
    /// The capability wanted, 1 to 256 bytes.
    pub capability: String,
    /// At most this many agents in the answer; the node's default if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only agents whose id sorts after this one (paging).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<AgentId>,
}

/// One agent in a [`DiscoverResult`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The agent's id.
    pub agent_id: AgentId,
    /// Its name.
    pub name: String,
    /// Its capabilities.
    pub capabilities: Vec<String>,
    /// Where to send Calls for it, as `mxp://host:port/agent-id`.
    pub endpoint: String,
    /// `online` or `offline` (heartbeats stopped).
    pub status: String,
    /// The fingerprint of the node that registered it (for a local agent,
    /// the answering node's): names are chosen by registrants and are not
    /// keys; this, with the id, says whose agent it is.
    #[serde(default)]
    pub owner: String,
    /// Whether it runs on the answering node.
    #[serde(default)]
    pub local: bool,
}

/// The `result` of a Response to AgentDiscover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DiscoverResult {
    /// Matching agents, in id order.
    pub agents: Vec<AgentInfo>,
    /// Where the next page starts (send it as `after`); absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<AgentId>,
}

impl TypedPayload for DiscoverRequest {
    const MESSAGE_TYPE: MessageType = MessageType::AgentDiscover;

    fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        let req: DiscoverRequest = from_json("AgentDiscover", payload)?;
        if req.capability.is_empty() {
            return Err(DecodeError::InvalidValue {
                field: "capability",
                reason: "must not be empty",
            });
        }
        check_len("capability", req.capability.len(), MAX_CAPABILITY_LEN)?;
        Ok(req)
    }

    fn to_frame(&self, message_id: u64, trace_id: u64, flags: Flags) -> Result<Frame, EncodeError> {
        let body = to_json("AgentDiscover", self)?;
        frame_of(Self::MESSAGE_TYPE, message_id, trace_id, flags, &[&body])
    }
}

/// AgentHeartbeat (`0x03`) payload: a JSON object naming the sender's live agents.
///
/// ```json
/// {"agents": ["67e55044-10b1-426f-9247-bb680e5fe0c8"], "ttl_secs": 15}
/// ```
///
/// A receiver marks each listed agent online until `ttl_secs` pass without
/// another heartbeat naming it, then offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Agents alive on the sender, at most 4096.
    pub agents: Vec<AgentId>,
    /// Seconds the listed agents stay online without another heartbeat.
    pub ttl_secs: u32,
}

impl TypedPayload for Heartbeat {
    const MESSAGE_TYPE: MessageType = MessageType::AgentHeartbeat;

    fn decode(payload: &Bytes) -> Result<Self, DecodeError> {
        let hb: Heartbeat = from_json("AgentHeartbeat", payload)?;
        check_len(
            "heartbeat agent count",
            hb.agents.len(),
            MAX_HEARTBEAT_AGENTS,
        )?;
        Ok(hb)
    }

    fn to_frame(&self, message_id: u64, trace_id: u64, flags: Flags) -> Result<Frame, EncodeError> {
        let body = to_json("AgentHeartbeat", self)?;
        frame_of(Self::MESSAGE_TYPE, message_id, trace_id, flags, &[&body])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> AgentRegister {
        AgentRegister {
            agent_id: AgentId::from_bytes([1; 16]),
            name: "demo".into(),
            capabilities: vec!["echo".into(), "status".into()],
            endpoint: SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 5), 9000),
        }
    }

    #[test]
    fn register_layout_matches_the_spec() {
        let bytes = reg().encode().unwrap();
        assert_eq!(bytes.len(), reg().encoded_len());
        assert_eq!(&bytes[..16], &[1; 16]);
        assert_eq!(&bytes[16..18], &[4, 0]);
        assert_eq!(&bytes[18..22], b"demo");
        assert_eq!(&bytes[22..24], &[2, 0]);
        assert_eq!(&bytes[24..26], &[4, 0]);
        assert_eq!(&bytes[bytes.len() - 6..], &[10, 0, 1, 5, 0x28, 0x23]);
        assert_eq!(AgentRegister::decode_slice(&bytes).unwrap(), reg());
    }

    #[test]
    fn register_refuses_bad_input_with_the_right_class() {
        let good = reg().encode().unwrap();
        for cut in 0..good.len() {
            let err = AgentRegister::decode_slice(&good[..cut]).unwrap_err();
            assert_eq!(err.class(), "truncated", "cut at {cut}: {err}");
        }
        let mut extra = good.clone();
        extra.push(0);
        assert_eq!(
            AgentRegister::decode_slice(&extra).unwrap_err().class(),
            "trailing_bytes"
        );

        // A huge capability count in a tiny payload: refused before allocating.
        let mut lie = good[..22].to_vec();
        lie.extend_from_slice(&200u16.to_le_bytes());
        assert_eq!(
            AgentRegister::decode_slice(&lie).unwrap_err().class(),
            "truncated"
        );
        let mut lie = good[..22].to_vec();
        lie.extend_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(
            AgentRegister::decode_slice(&lie).unwrap_err().class(),
            "limit_exceeded"
        );

        let mut empty_name = good.clone();
        empty_name[16] = 0;
        empty_name.drain(18..22);
        assert_eq!(
            AgentRegister::decode_slice(&empty_name)
                .unwrap_err()
                .class(),
            "invalid_value"
        );
    }

    #[test]
    fn register_encoder_enforces_limits() {
        let mut r = reg();
        r.name = "x".repeat(MAX_AGENT_NAME_LEN + 1);
        assert!(matches!(r.encode(), Err(EncodeError::LimitExceeded { .. })));
        let mut r = reg();
        r.capabilities = vec!["c".into(); MAX_CAPABILITIES + 1];
        assert!(r.encode().is_err());
        let mut r = reg();
        r.capabilities = vec![String::new()];
        assert!(r.encode().is_err());
    }

    #[test]
    fn discover_and_heartbeat_round_trip_and_validate() {
        let req = DiscoverRequest {
            capability: "fs.read".into(),
            limit: Some(3),
            after: None,
        };
        let f = req.to_frame(1, 2, Flags::EMPTY).unwrap();
        assert_eq!(DiscoverRequest::from_frame(&f).unwrap(), req);
        let bad = Bytes::from_static(br#"{"capability":""}"#);
        assert_eq!(
            DiscoverRequest::decode(&bad).unwrap_err().class(),
            "invalid_value"
        );
        let bad = Bytes::from_static(br#"{"limit":1}"#);
        assert_eq!(
            DiscoverRequest::decode(&bad).unwrap_err().class(),
            "invalid_json"
        );

        let hb = Heartbeat {
            agents: vec![AgentId::from_bytes([2; 16])],
            ttl_secs: 15,
        };
        let f = hb.to_frame(1, 2, Flags::EMPTY).unwrap();
        assert_eq!(Heartbeat::from_frame(&f).unwrap(), hb);
        assert_eq!(
            Heartbeat::from_frame(&req.to_frame(1, 2, Flags::EMPTY).unwrap())
                .unwrap_err()
                .class(),
            "wrong_message_type"
        );
    }
}
