//! The address of an actor that a supervisor may replace, and the bridge
//! that feeds it from a bus mailbox in batches.

use std::sync::{Arc, RwLock};

use mxp_transport::{Envelope, Mailbox};

use crate::error::CallFailure;
use ractor::{ActorRef, Message, MessagingErr};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The current address of a restartable actor; empty while it (re)starts.
pub(crate) struct Slot<M>(RwLock<Option<ActorRef<M>>>);

impl<M: Message> Slot<M> {
    pub(crate) fn empty() -> Slot<M> {
        Slot(RwLock::new(None))
    }

    pub(crate) fn get(&self) -> Option<ActorRef<M>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set(&self, actor: ActorRef<M>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(actor);
    }

    pub(crate) fn take(&self) -> Option<ActorRef<M>> {
        self.0.write().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Whether `cell` is the actor in the slot.
    pub(crate) fn holds(&self, cell: &ractor::ActorCell) -> bool {
        self.get().is_some_and(|a| a.get_id() == cell.get_id())
    }

    /// Sends `msg` to the actor in the slot; gives it back if there is no
    /// actor or it stopped (`None` if the message was lost with it).
    pub(crate) fn cast(&self, msg: M) -> Result<(), Option<M>> {
        match self.get() {
            None => Err(Some(msg)),
            Some(actor) => actor.cast(msg).map_err(|e| match e {
                MessagingErr::SendErr(m) => Some(m),
                _ => None,
            }),
        }
    }
}

/// Envelopes moved as one actor message, with the in-flight permits they hold.
pub(crate) struct Batch {
    /// The envelopes.
    pub(crate) envelopes: Vec<Envelope>,
    /// One permit per envelope when the receiver's work in flight is bounded.
    permits: Option<OwnedSemaphorePermit>,
}

impl Batch {
    /// One envelope's permit, to keep until its Call is answered.
    pub(crate) fn take_permit(&mut self) -> Option<OwnedSemaphorePermit> {
        self.permits.as_mut().and_then(|p| p.split(1))
    }
}

/// Moves envelopes from `mailbox` to the actor in `slot`, up to `batch` per
/// actor message (`wrap` makes the message, `unwrap` recovers the envelopes
/// of one that could not be delivered). Survives restarts of that actor: the
/// address is read from the slot for every batch; a batch that finds no actor
/// is answered with a retriable `agent_unavailable`.
///
/// With `in_flight`, every envelope holds a permit until the receiver drops
/// it (a Call: when it is answered). When all permits are out the bridge
/// stops reading, the bounded mailbox fills, and senders are told the agent
/// is overloaded: the actor's own (unbounded) queue never grows past the limit.
pub(crate) async fn bridge<M: Message>(
    mut mailbox: Mailbox,
    slot: Arc<Slot<M>>,
    batch: usize,
    in_flight: Option<Arc<Semaphore>>,
    wrap: fn(Batch) -> M,
    unwrap: fn(M) -> Vec<Envelope>,
) {
    let mut buf = Vec::with_capacity(batch);
    while mailbox.recv_many(&mut buf, batch).await > 0 {
        metrics::histogram!("mxp_mailbox_depth").record(mailbox.depth() as f64);
        let envelopes = std::mem::replace(&mut buf, Vec::with_capacity(batch));
        let permits = match &in_flight {
            Some(limit) => {
                let n = u32::try_from(envelopes.len()).unwrap_or(u32::MAX);
                match limit.clone().acquire_many_owned(n).await {
                    Ok(p) => Some(p),
                    Err(_) => return,
                }
            }
            None => None,
        };
        if let Err(Some(back)) = slot.cast(wrap(Batch { envelopes, permits })) {
            for reply in unwrap(back).into_iter().filter_map(|mut e| e.take_reply()) {
                CallFailure::Restarting("the agent").answer(reply);
            }
        }
    }
}
