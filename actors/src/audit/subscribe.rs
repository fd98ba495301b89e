//! `audit.subscribe`: a subscriber follows the log live (docs/AUDIT.md,
//! "Following a node live"). The Call is answered by a stream
//! ([`mxp_transport::ReplyStream`]): a Response accepting it, then every
//! record from the sequence number asked for as an `audit.record` Event, in
//! order, and every checkpoint as an `audit.checkpoint` Event right after
//! the records it covers, with the consistency proof from the one before;
//! then, caught up, each new record as soon as it is durable.
//!
//! Bounds: subscriptions per principal and per node
//! ([`SubscriptionLimits`]); a subscription holds at most one page of
//! records ([`PAGE_RECORDS`], [`PAGE_BYTES`]) and the frames the stream
//! queues; a reader that does not read holds the task back (QUIC flow
//! control) and is cut off by the transport after `idle_timeout`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mxp_governance::audit::hex32;
use mxp_protocol::{ErrorCode, PrincipalId};
use mxp_transport::{ReplyStream, TransportError};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{Auditor, Feed};
use crate::store::{Store, StoreError, StoredCheckpoint};

/// Records one page holds at most.
pub const PAGE_RECORDS: usize = 64;
/// Bytes of records one page holds at most (past it the page ends; a
/// single larger record is a page of its own).
pub const PAGE_BYTES: usize = 1 << 20;
/// The Event topic of a record.
pub const RECORD_TOPIC: &str = "audit.record";
/// The Event topic of a checkpoint.
pub const CHECKPOINT_TOPIC: &str = "audit.checkpoint";

/// How many subscriptions a node serves at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionLimits {
    /// Per principal (`audit.max_subscriptions_per_peer`).
    pub per_peer: usize,
    /// In all (`audit.max_subscriptions`).
    pub total: usize,
}

impl Default for SubscriptionLimits {
    fn default() -> SubscriptionLimits {
        SubscriptionLimits {
            per_peer: 4,
            total: 64,
        }
    }
}

/// Why a subscription is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeRefused {
    /// The principal holds its limit already.
    #[error(
        "{who} holds {limit} audit subscriptions already (audit.max_subscriptions_per_peer); close one first"
    )]
    PerPeer {
        /// The principal.
        who: String,
        /// The limit.
        limit: usize,
    },
    /// The node serves its limit already.
    #[error(
        "this node serves {limit} audit subscriptions already (audit.max_subscriptions); try again later"
    )]
    Total {
        /// The limit.
        limit: usize,
    },
}

/// Subscriptions held, per principal and in all (pure counting).
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by: HashMap<PrincipalId, usize>,
}

impl Counts {
    fn admit(&mut self, who: PrincipalId, l: SubscriptionLimits) -> Result<(), SubscribeRefused> {
        let mine = self.by.get(&who).copied().unwrap_or(0);
        if mine >= l.per_peer {
            return Err(SubscribeRefused::PerPeer {
                who: who.to_string(),
                limit: l.per_peer,
            });
        }
        if self.total >= l.total {
            return Err(SubscribeRefused::Total { limit: l.total });
        }
        self.total += 1;
        self.by.insert(who, mine + 1);
        Ok(())
    }

    fn release(&mut self, who: &PrincipalId) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.by.get_mut(who) {
            *n -= 1;
            if *n == 0 {
                self.by.remove(who);
            }
        }
    }
}

/// The node's table of subscriptions.
#[derive(Debug)]
pub struct Subscriptions {
    limits: SubscriptionLimits,
    counts: Mutex<Counts>,
}

impl Subscriptions {
    /// A table within `limits`.
    pub fn new(limits: SubscriptionLimits) -> Arc<Subscriptions> {
        Arc::new(Subscriptions {
            limits,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Takes a slot for `who`, held until the [`SubscriptionSlot`] drops.
    ///
    /// # Errors
    /// [`SubscribeRefused`] naming the limit reached.
    pub fn admit(self: &Arc<Self>, who: PrincipalId) -> Result<SubscriptionSlot, SubscribeRefused> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(who, self.limits)?;
        metrics::gauge!("mxp_audit_subscribers").increment(1.0);
        Ok(SubscriptionSlot {
            table: self.clone(),
            who,
        })
    }

    /// Subscriptions served now.
    pub fn count(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

/// One subscription's place in the table.
#[derive(Debug)]
pub struct SubscriptionSlot {
    table: Arc<Subscriptions>,
    who: PrincipalId,
}

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        self.table
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .release(&self.who);
        metrics::gauge!("mxp_audit_subscribers").decrement(1.0);
    }
}

/// What a subscriber asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeRequest {
    /// The first sequence number to send.
    pub from: u64,
    /// The size of the last checkpoint the subscriber accepted, so the first
    /// checkpoint sent carries a consistency proof from it.
    pub checkpoint: Option<u64>,
}

/// Why a subscription's stream ended early.
#[derive(Debug)]
enum Ended {
    /// The subscriber left.
    Gone,
    /// The node cannot go on (store error, writer closed); said in an Error.
    Failed(ErrorCode, String),
}

impl From<TransportError> for Ended {
    fn from(_: TransportError) -> Ended {
        Ended::Gone
    }
}

impl From<StoreError> for Ended {
    fn from(e: StoreError) -> Ended {
        Ended::Failed(
            ErrorCode::INTERNAL,
            format!("the audit log cannot be read: {e}"),
        )
    }
}

/// Runs one subscription on `out` until the subscriber leaves or the node
/// cannot go on (then the stream ends with an Error saying why).
///
/// # Cancel safety
/// Cancel safe: dropping it ends the stream (FIN); what was sent stays sent.
pub async fn serve(
    auditor: Auditor,
    feed: Feed,
    out: ReplyStream,
    request: SubscribeRequest,
    _slot: SubscriptionSlot,
) {
    let Feed {
        store,
        mut head,
        mut checkpoints,
        info,
        ..
    } = feed;
    let at = *head.borrow_and_update();
    let accepted = json!({
        "from": request.from,
        "head": at,
        "origin": info.as_ref().map(|i| i.origin.clone()),
        "vkey": info.as_ref().map(|i| i.vkey.clone()),
    });
    if out.respond(accepted).await.is_err() {
        return;
    }
    let run = Run {
        auditor,
        store,
        next: request.from,
        cursor: request
            .checkpoint
            .unwrap_or_else(|| request.from.saturating_sub(1)),
        last_sent: request.checkpoint,
    };
    if let Err(Ended::Failed(code, message)) = run.go(&mut head, &mut checkpoints, &out).await {
        tracing::warn!("audit subscription ended: {message}");
        let _ = out.end_with_error(code, message).await;
    }
}

struct Run {
    auditor: Auditor,
    store: Arc<Store>,
    /// The next record to send.
    next: u64,
    /// Checkpoints above this size are still to send.
    cursor: u64,
    /// The size of the last checkpoint the subscriber holds.
    last_sent: Option<u64>,
}

impl Run {
    async fn go(
        mut self,
        head: &mut watch::Receiver<u64>,
        checkpoints: &mut watch::Receiver<u64>,
        out: &ReplyStream,
    ) -> Result<(), Ended> {
        loop {
            let at = *head.borrow_and_update();
            checkpoints.borrow_and_update();
            let (store, cursor) = (self.store.clone(), self.cursor);
            let pending = blocking(move || store.checkpoint_after(cursor)).await?;
            if let Some(cp) = pending.as_ref().filter(|cp| cp.size <= self.next) {
                self.send_checkpoint(cp, out).await?;
                continue;
            }
            if self.next < at {
                let until = pending.as_ref().map_or(at, |cp| cp.size.min(at));
                let (store, next) = (self.store.clone(), self.next);
                let page =
                    blocking(move || store.audit_records(next, until, PAGE_RECORDS, PAGE_BYTES))
                        .await?;
                for (seq, bytes) in page {
                    let data = json!({ "seq": seq, "record": B64.encode(&bytes) });
                    out.event(RECORD_TOPIC, data).await?;
                    self.next = seq + 1;
                }
                continue;
            }
            tokio::select! {
                r = head.changed() => r.map_err(|_| closed())?,
                r = checkpoints.changed() => r.map_err(|_| closed())?,
                () = out.closed() => return Err(Ended::Gone),
            }
        }
    }

    async fn send_checkpoint(
        &mut self,
        cp: &StoredCheckpoint,
        out: &ReplyStream,
    ) -> Result<(), Ended> {
        let (from_size, proof) = match self.last_sent {
            None | Some(0) => (0, Vec::new()),
            Some(k) if k == cp.prev_size => (k, cp.proof.clone()),
            Some(k) => match self.auditor.consistency(k, cp.size).await {
                Ok(p) => (k, p),
                Err(e) => {
                    return Err(Ended::Failed(
                        ErrorCode::INTERNAL,
                        format!("no consistency proof from {k} to {}: {e}", cp.size),
                    ));
                }
            },
        };
        let data = json!({
            "size": cp.size,
            "note": cp.note,
            "from_size": from_size,
            "proof": proof.iter().map(hex32).collect::<Vec<_>>(),
        });
        out.event(CHECKPOINT_TOPIC, data).await?;
        self.cursor = cp.size;
        self.last_sent = Some(cp.size);
        Ok(())
    }
}

fn closed() -> Ended {
    Ended::Failed(
        ErrorCode::AGENT_UNAVAILABLE,
        "the audit log closed (the node is stopping)".into(),
    )
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Ended> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Ended::from),
        Err(e) => Err(Ended::Failed(
            ErrorCode::INTERNAL,
            format!("audit read failed: {e}"),
        )),
    }
}

/// The JSON of a checkpoint for `audit.checkpoint` (and its Event).
pub fn checkpoint_json(cp: &StoredCheckpoint) -> Value {
    json!({ "size": cp.size, "note": cp.note, "time_ms": cp.time_ms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxp_protocol::Fingerprint;

    #[test]
    fn slots_are_bounded_per_principal_and_in_all_and_given_back() {
        let l = SubscriptionLimits {
            per_peer: 2,
            total: 3,
        };
        let (a, b, c) = (
            PrincipalId::Peer(Fingerprint([1; 32])),
            PrincipalId::Peer(Fingerprint([2; 32])),
            PrincipalId::Operator(Fingerprint([3; 32])),
        );
        let mut t = Counts::default();
        t.admit(a, l).unwrap();
        t.admit(a, l).unwrap();
        assert!(matches!(
            t.admit(a, l),
            Err(SubscribeRefused::PerPeer { limit: 2, .. })
        ));
        t.admit(b, l).unwrap();
        let e = t.admit(c, l).unwrap_err();
        assert_eq!(e, SubscribeRefused::Total { limit: 3 });
        assert!(e.to_string().contains("audit.max_subscriptions"), "{e}");
        t.release(&a);
        t.admit(c, l).unwrap();
        assert!(t.admit(a, l).is_err(), "full again");
        t.release(&b);
        t.admit(a, l).unwrap();
        assert_eq!(t.by.get(&b), None, "a principal with none is forgotten");
    }

    #[test]
    fn a_slot_is_given_back_when_dropped() {
        let table = Subscriptions::new(SubscriptionLimits {
            per_peer: 1,
            total: 1,
        });
        let who = PrincipalId::Peer(Fingerprint([1; 32]));
        let slot = table.admit(who).unwrap();
        assert_eq!(table.count(), 1);
        assert!(table.admit(who).is_err());
        drop(slot);
        assert_eq!(table.count(), 0);
        let _again = table.admit(who).unwrap();
    }
}
