//! The kill switch: while on, every external-write intent is denied, at the
//! gate and again at the enforcer, whatever approvals exist.
//!
//! Turning it on is confirmed, not assumed: each tool executor answers once
//! no external write of its agent is in flight ([`InFlight::wait_idle`]).
//! The enforcer enters [`InFlight`] *before* it reads the switch, and the
//! switch is set *before* executors are asked, both sequentially
//! consistent: so either the enforcer sees the switch on and refuses, or
//! the executor's confirmation waits for that write to finish.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

use crate::store::{Store, StoreError};

/// The node's kill switch (shared: clones see the same switch).
#[derive(Clone)]
pub struct KillSwitch {
    on: Arc<AtomicBool>,
    store: Option<Arc<Store>>,
}

impl std::fmt::Debug for KillSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KillSwitch")
            .field("on", &self.is_on())
            .finish_non_exhaustive()
    }
}

impl KillSwitch {
    pub(crate) fn new(store: Option<Arc<Store>>) -> KillSwitch {
        KillSwitch {
            on: Arc::new(AtomicBool::new(false)),
            store,
        }
    }

    /// Reads the persisted state.
    pub(crate) fn load(&self) -> Result<(), StoreError> {
        if let Some(store) = &self.store {
            let on = store.kill_switch()?;
            self.on.store(on, Ordering::SeqCst);
            metrics::gauge!("mxp_kill_switch").set(if on { 1.0 } else { 0.0 });
        }
        Ok(())
    }

    /// Whether it is on.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::SeqCst)
    }

    /// Turns it on or off: persisted first (durably), then applied. The
    /// caller then asks each executor to confirm ([`InFlight::wait_idle`]).
    ///
    /// # Errors
    /// [`StoreError`] when the state cannot be persisted; the switch is
    /// then left as it was.
    pub fn set(&self, on: bool) -> Result<(), StoreError> {
        if let Some(store) = &self.store {
            store.set_kill_switch(on)?;
        }
        self.on.store(on, Ordering::SeqCst);
        metrics::gauge!("mxp_kill_switch").set(if on { 1.0 } else { 0.0 });
        Ok(())
    }
}

/// External writes of one agent in flight.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// One external write in flight; leaving drops it.
#[derive(Debug)]
pub struct InFlightGuard<'a>(&'a InFlight);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl InFlight {
    /// Enters: counted until the guard drops.
    pub fn enter(&self) -> InFlightGuard<'_> {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self)
    }

    /// How many are in flight.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Returns once none is in flight.
    ///
    /// # Cancel safety
    /// Cancel safe: it holds nothing.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}
