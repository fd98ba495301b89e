//! Byte budgets: how many bytes of frames an agent, and the whole node, may
//! hold queued in mailboxes and in flight.
//!
//! A frame is charged when it enters a mailbox (to its agent's budget and to
//! the node's) and released when the last part holding it lets go: the
//! envelope, or the job that took its [`BodyPermit`] until the Call is
//! answered. A frame that does not fit is refused at once (`overloaded`),
//! so the bytes a peer can make a node hold are bounded by the budgets, not
//! by a count of frames.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A budget of bytes. Cloning gives another handle to the same budget.
#[derive(Debug, Clone)]
pub struct ByteBudget {
    sem: Arc<Semaphore>,
    limit: usize,
}

/// Charging a budget failed: it has fewer bytes free than asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{asked} bytes asked of a budget of {limit} bytes with {free} free")]
pub struct OverBudget {
    /// Bytes asked for.
    pub asked: usize,
    /// Bytes free when asked.
    pub free: usize,
    /// The budget's size.
    pub limit: usize,
}

impl ByteBudget {
    /// A budget of `limit` bytes (at most `u32::MAX`; larger is clamped).
    pub fn new(limit: usize) -> ByteBudget {
        let limit = limit.min(u32::MAX as usize);
        ByteBudget {
            sem: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// The budget's size.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes free now.
    pub fn available(&self) -> usize {
        self.sem.available_permits()
    }

    fn try_take(&self, bytes: usize) -> Result<Option<OwnedSemaphorePermit>, OverBudget> {
        if bytes == 0 {
            return Ok(None);
        }
        let over = || OverBudget {
            asked: bytes,
            free: self.sem.available_permits(),
            limit: self.limit,
        };
        let n = u32::try_from(bytes).map_err(|_| over())?;
        self.sem
            .clone()
            .try_acquire_many_owned(n)
            .map(Some)
            .map_err(|_| over())
    }
}

/// Bytes held from an agent's budget and the node's; released when dropped.
#[derive(Debug, Default)]
pub struct BodyPermit {
    budgets: Vec<(ByteBudget, Option<OwnedSemaphorePermit>)>,
    bytes: usize,
}

impl BodyPermit {
    /// Takes `bytes` from each of `budgets`, or from none.
    ///
    /// # Errors
    /// [`OverBudget`] for the first budget without room.
    pub fn take(budgets: &[&ByteBudget], bytes: usize) -> Result<BodyPermit, OverBudget> {
        let mut held = Vec::with_capacity(budgets.len());
        for b in budgets {
            held.push(((*b).clone(), b.try_take(bytes)?));
        }
        Ok(BodyPermit {
            budgets: held,
            bytes,
        })
    }

    /// Takes `bytes` from each of `budgets`, waiting for room (backpressure).
    /// `bytes` above a budget's size is clamped to it, so a wait always ends.
    ///
    /// # Cancel safety
    /// Cancel safe: bytes already taken are given back when the future is
    /// dropped.
    pub async fn acquire(budgets: &[&ByteBudget], bytes: usize) -> BodyPermit {
        let mut held = Vec::with_capacity(budgets.len());
        for b in budgets {
            let n = u32::try_from(bytes.min(b.limit)).unwrap_or(u32::MAX);
            let permit = if n == 0 {
                None
            } else {
                // The semaphore is never closed, so acquiring cannot fail.
                b.sem.clone().acquire_many_owned(n).await.ok()
            };
            held.push(((*b).clone(), permit));
        }
        BodyPermit {
            budgets: held,
            bytes,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Holds `bytes` instead: gives back what is no longer needed, or takes
    /// more from every budget (all or nothing).
    ///
    /// # Errors
    /// [`OverBudget`] if a budget lacks the extra bytes; the permit is then
    /// unchanged.
    pub fn resize(&mut self, bytes: usize) -> Result<(), OverBudget> {
        if bytes > self.bytes {
            let extra = bytes - self.bytes;
            let mut taken = Vec::with_capacity(self.budgets.len());
            for (b, _) in &self.budgets {
                taken.push(b.try_take(extra)?);
            }
            for ((_, held), more) in self.budgets.iter_mut().zip(taken) {
                match (held.as_mut(), more) {
                    (Some(h), Some(m)) => h.merge(m),
                    (None, m) => *held = m,
                    (Some(_), None) => {}
                }
            }
        } else {
            let give_back = u32::try_from(self.bytes - bytes).unwrap_or(u32::MAX);
            for (_, held) in &mut self.budgets {
                if bytes == 0 {
                    *held = None;
                } else if let Some(h) = held.as_mut() {
                    drop(h.split(give_back as usize));
                }
            }
        }
        self.bytes = bytes;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_charge_every_budget_and_release_on_drop() {
        let agent = ByteBudget::new(100);
        let node = ByteBudget::new(150);
        let a = BodyPermit::take(&[&agent, &node], 60).unwrap();
        assert_eq!((agent.available(), node.available()), (40, 90));
        // The agent's budget refuses; nothing is taken from the node's.
        let err = BodyPermit::take(&[&agent, &node], 50).unwrap_err();
        assert_eq!(err.free, 40);
        assert_eq!(node.available(), 90);
        drop(a);
        assert_eq!((agent.available(), node.available()), (100, 150));
    }

    #[test]
    fn resize_grows_all_or_nothing_and_shrinks() {
        let agent = ByteBudget::new(100);
        let node = ByteBudget::new(120);
        let mut p = BodyPermit::take(&[&agent, &node], 50).unwrap();
        p.resize(90).unwrap();
        assert_eq!((agent.available(), node.available()), (10, 30));
        assert!(p.resize(130).is_err());
        assert_eq!(p.bytes(), 90);
        assert_eq!((agent.available(), node.available()), (10, 30));
        p.resize(20).unwrap();
        assert_eq!((agent.available(), node.available()), (80, 100));
        p.resize(0).unwrap();
        assert_eq!((agent.available(), node.available()), (100, 120));
        p.resize(5).unwrap();
        assert_eq!((agent.available(), node.available()), (95, 115));
        drop(p);
        assert_eq!(agent.available(), 100);
    }
}
