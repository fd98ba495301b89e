//! The subscriber's end of the live audit stream: [`AuditFollower`]
//! subscribes to a node (`audit.subscribe`), verifies every record and
//! checkpoint as it arrives ([`Follower`]), optionally cosigns the
//! checkpoints it accepted and hands the cosignatures back (a witness,
//! `audit.cosign`), and after a lost connection subscribes again from the
//! next sequence number, so nothing is missed and nothing is skipped.
//!
//! The node's audit key is pinned: given, or taken from the first answer
//! (trusted on first use) and required of every later one.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mxp_governance::audit::note::{Cosigner, NoteVerifier};
use mxp_governance::audit::{
    Accepted, FollowError, Follower, Hash, Limits, LogIdentity, Record, TreeHead,
};
use mxp_protocol::{CallBody, ErrorPayload, EventBody, Frame, MessageType, TypedPayload};
use mxp_transport::{AnswerStream, CallError, Client, MxpUrl, NODE_AGENT};
use serde_json::{Value, json};

use super::subscribe::{CHECKPOINT_TOPIC, RECORD_TOPIC};

/// How to follow a node.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// The node, `mxp://host:port`.
    pub node: MxpUrl,
    /// The first sequence number wanted.
    pub from: u64,
    /// The node's audit key, if known (else pinned on first use).
    pub vkey: Option<NoteVerifier>,
    /// The last checkpoint accepted before (a witness keeps it across
    /// restarts): the first checkpoint must extend it.
    pub last_checkpoint: Option<TreeHead>,
    /// Cosign every checkpoint accepted with this key and hand the
    /// cosignature to the node (`audit.cosign`).
    pub witness: Option<Cosigner>,
    /// Deadline of each subscription's accepting answer and of each
    /// `audit.cosign`.
    pub timeout: Duration,
    /// Subscriptions tried in a row after a lost stream before giving up
    /// (0: do not reconnect).
    pub reconnects: u32,
}

impl FollowOptions {
    /// Follow `node` from `from`, pinning its key on first use, reconnecting
    /// up to 5 times in a row, with a 10 s answer deadline.
    pub fn new(node: MxpUrl, from: u64) -> FollowOptions {
        FollowOptions {
            node,
            from,
            vkey: None,
            last_checkpoint: None,
            witness: None,
            timeout: Duration::from_secs(10),
            reconnects: 5,
        }
    }
}

/// What the stream brought, verified.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FollowEvent {
    /// A record that extends the chain.
    Record(Box<Record>),
    /// A checkpoint signed by the node that extends the last one accepted.
    Checkpoint {
        /// It, and whether its root was checked against the records.
        accepted: Box<Accepted>,
        /// As a witness: what the node said to the cosignature.
        cosigned: Option<Result<Vec<String>, String>>,
    },
    /// The stream was lost and a new subscription resumed it.
    Resumed {
        /// The sequence number it resumed from.
        from: u64,
        /// Why the old one ended.
        reason: String,
    },
}

/// Why following stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FollowFailure {
    /// The node refused the subscription (denied, a sequence number that
    /// does not exist, too many subscriptions) or could not be reached.
    #[error("cannot subscribe to {node}: {source}")]
    Subscribe {
        /// The node.
        node: String,
        /// What the node or the transport said.
        source: Box<CallError>,
    },
    /// What the node sent does not verify: the stream is not trusted from
    /// here on.
    #[error("the audit stream does not verify: {0}")]
    Verify(#[from] FollowError),
    /// The node presents another audit key than the pinned one.
    #[error("the node's audit key is {found}, not the pinned {pinned}")]
    KeyChanged {
        /// The pinned key.
        pinned: String,
        /// The key the node presents.
        found: String,
    },
    /// A frame that is not what the stream carries.
    #[error("unexpected frame on the audit stream: {0}")]
    Protocol(String),
    /// The node ended the stream, and it was not resumed.
    #[error("the audit stream ended: {0}")]
    Ended(String),
    /// Resuming, the node no longer holds the records this follower already
    /// verified: its log was cut or replaced.
    #[error(
        "the node now holds fewer records than the {verified} this follower verified: its log was cut or replaced ({said})"
    )]
    Behind {
        /// Records verified so far.
        verified: u64,
        /// What the node said.
        said: String,
    },
}

/// A live, verifying follower of a node's audit log.
pub struct AuditFollower {
    client: Arc<Client>,
    opts: FollowOptions,
    url: MxpUrl,
    state: Option<Follower>,
    stream: Option<AnswerStream>,
    /// Why the last stream ended, reported when the next one starts.
    lost: Option<String>,
}

impl std::fmt::Debug for AuditFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditFollower")
            .field("node", &self.opts.node)
            .field("next_seq", &self.next_seq())
            .finish_non_exhaustive()
    }
}

fn hashes(v: &Value) -> Option<Vec<Hash>> {
    v.as_array()?
        .iter()
        .map(|h| hex::decode(h.as_str()?).ok()?.try_into().ok())
        .collect()
}

impl AuditFollower {
    /// A follower that calls with `client`.
    pub fn new(client: Arc<Client>, opts: FollowOptions) -> AuditFollower {
        let url = MxpUrl::new(opts.node.host(), opts.node.port(), Some(NODE_AGENT));
        AuditFollower {
            client,
            opts,
            url,
            state: None,
            stream: None,
            lost: None,
        }
    }

    /// The next sequence number due (where a new subscription starts).
    pub fn next_seq(&self) -> u64 {
        self.state
            .as_ref()
            .map_or(self.opts.from, Follower::next_seq)
    }

    /// The last checkpoint accepted.
    pub fn last_checkpoint(&self) -> Option<TreeHead> {
        match &self.state {
            Some(s) => s.last_checkpoint(),
            None => self.opts.last_checkpoint,
        }
    }

    /// The node's audit key, once pinned.
    pub fn vkey(&self) -> Option<&NoteVerifier> {
        self.opts.vkey.as_ref()
    }

    /// Drops the current stream as if the connection broke; the next
    /// [`AuditFollower::next`] subscribes again from [`Self::next_seq`].
    pub fn drop_stream(&mut self, reason: &str) {
        self.stream = None;
        self.lost = Some(reason.to_owned());
    }

    /// The next verified event.
    ///
    /// # Errors
    /// [`FollowFailure`]; after one, the follower should not be used again.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped while a frame is being read, the stream's
    /// framing is lost; call [`AuditFollower::drop_stream`] then.
    pub async fn next(&mut self) -> Result<FollowEvent, FollowFailure> {
        let mut failures = 0u32;
        loop {
            if self.stream.is_none() {
                match self.subscribe().await {
                    Ok(()) => {
                        if let Some(reason) = self.lost.take() {
                            return Ok(FollowEvent::Resumed {
                                from: self.next_seq(),
                                reason,
                            });
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        let retriable = matches!(&e, FollowFailure::Subscribe { source, .. } if source.code().retriable());
                        if !retriable || failures > self.opts.reconnects {
                            return Err(e);
                        }
                        // Back off before the next attempt: 100 ms, doubling.
                        tokio::time::sleep(Duration::from_millis(100 << failures.min(6))).await;
                        continue;
                    }
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            match stream.next().await {
                Ok(Some(frame)) => {
                    if let Some(event) = self.frame(&frame).await? {
                        return Ok(event);
                    }
                }
                Ok(None) => self.lost("the node ended the stream".into())?,
                Err(e) => self.lost(e.to_string())?,
            }
        }
    }

    fn lost(&mut self, reason: String) -> Result<(), FollowFailure> {
        self.stream = None;
        if self.opts.reconnects == 0 {
            return Err(FollowFailure::Ended(reason));
        }
        self.lost = Some(reason);
        Ok(())
    }

    async fn subscribe(&mut self) -> Result<(), FollowFailure> {
        let params = json!({
            "from": self.next_seq(),
            "checkpoint": self.last_checkpoint().map(|c| c.size),
        });
        let resuming = self.state.is_some();
        let verified = self.next_seq();
        let failed = |source: CallError| {
            // The only parameters sent are well-formed: refused on a resume,
            // they name a sequence number beyond the node's head.
            if resuming && source.code() == mxp_protocol::ErrorCode::INVALID_PAYLOAD {
                return FollowFailure::Behind {
                    verified,
                    said: source.to_string(),
                };
            }
            FollowFailure::Subscribe {
                node: self.opts.node.to_string(),
                source: Box::new(source),
            }
        };
        let stream = self
            .client
            .call_stream(
                &self.url,
                &CallBody::new("audit.subscribe", params),
                self.opts.timeout,
            )
            .await
            .map_err(failed)?;
        let accepted = stream
            .response()
            .and_then(|r| r.parse_body().ok())
            .map(|b| b.result)
            .unwrap_or(Value::Null);
        // A node that signs no checkpoints presents no key: its records are
        // still checked against the chain rule, and any checkpoint refused.
        let presented = accepted
            .get("vkey")
            .and_then(Value::as_str)
            .map(|v| {
                NoteVerifier::parse(v)
                    .map_err(|e| FollowFailure::Protocol(format!("the node's vkey {v:?}: {e}")))
            })
            .transpose()?;
        let origin = accepted.get("origin").and_then(Value::as_str).unwrap_or("");
        match (&self.opts.vkey, &presented) {
            (Some(pinned), found) if Some(pinned) != found.as_ref() => {
                return Err(FollowFailure::KeyChanged {
                    pinned: pinned.to_vkey(),
                    found: found
                        .as_ref()
                        .map_or_else(|| "none".to_owned(), NoteVerifier::to_vkey),
                });
            }
            (None, Some(p)) => self.opts.vkey = Some(p.clone()),
            _ => {}
        }
        if self.state.is_none() {
            let log = LogIdentity {
                origin: origin.to_owned(),
                verifiers: presented.into_iter().collect(),
            };
            self.state = Some(Follower::new(
                log,
                Limits::default(),
                self.opts.from,
                self.opts.last_checkpoint,
            ));
        }
        self.stream = Some(stream);
        Ok(())
    }

    /// The event a frame of the stream carries, verified; `None` when the
    /// node ended the stream with an Error (then a new one is started).
    async fn frame(&mut self, frame: &Frame) -> Result<Option<FollowEvent>, FollowFailure> {
        let protocol = |m: String| FollowFailure::Protocol(m);
        match frame.message_type() {
            MessageType::Event => {}
            MessageType::Error => {
                let why = ErrorPayload::from_frame(frame)
                    .ok()
                    .and_then(|e| e.parse_body().ok())
                    .map_or_else(|| "an Error frame".to_owned(), |b| b.message);
                self.lost(format!("the node ended the stream: {why}"))?;
                return Ok(None);
            }
            other => return Err(protocol(format!("a {other} frame"))),
        }
        let ev = EventBody::from_frame(frame).map_err(|e| protocol(e.to_string()))?;
        let Some(state) = self.state.as_mut() else {
            return Err(protocol(
                "an Event before the subscription was accepted".into(),
            ));
        };
        match ev.topic.as_str() {
            RECORD_TOPIC => {
                let bytes = ev
                    .data
                    .get("record")
                    .and_then(Value::as_str)
                    .and_then(|b| B64.decode(b).ok())
                    .ok_or_else(|| {
                        protocol("an audit.record without base64 record bytes".into())
                    })?;
                Ok(Some(FollowEvent::Record(Box::new(state.record(&bytes)?))))
            }
            CHECKPOINT_TOPIC => {
                let note = ev.data.get("note").and_then(Value::as_str);
                let from_size = ev.data.get("from_size").and_then(Value::as_u64);
                let proof = ev.data.get("proof").and_then(hashes);
                let (Some(note), Some(from_size), Some(proof)) = (note, from_size, proof) else {
                    return Err(protocol(
                        "an audit.checkpoint without note, from_size and proof".into(),
                    ));
                };
                let accepted = state.checkpoint(note.as_bytes(), from_size, &proof)?;
                let cosigned = match &self.opts.witness {
                    Some(w) => Some(self.cosign(&accepted, w).await),
                    None => None,
                };
                Ok(Some(FollowEvent::Checkpoint {
                    accepted: Box::new(accepted),
                    cosigned,
                }))
            }
            other => Err(protocol(format!("an Event with topic {other:?}"))),
        }
    }

    /// Cosigns `accepted` and hands the cosignature to the node.
    async fn cosign(&self, accepted: &Accepted, w: &Cosigner) -> Result<Vec<String>, String> {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let note = accepted.cosign(w, time).map_err(|e| e.to_string())?;
        let r = self
            .client
            .call(
                &self.url,
                &CallBody::new("audit.cosign", json!({ "note": note })),
                self.opts.timeout,
            )
            .await
            .map_err(|e| e.to_string())?;
        let body = r.parse_body().map_err(|e| e.to_string())?;
        Ok(body
            .result
            .get("cosigned_by")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default())
    }
}
