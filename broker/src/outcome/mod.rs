//! What happened to each effect: landed, failed, or in doubt.
//!
//! Before a tool with an external effect acts, the broker writes a durable
//! *pending* record under the intent's [`IdempotencyKey`]; after, it
//! records the [`Outcome`]. A pending record found when the ledger opens
//! (the node died mid-effect) becomes *in doubt*. The rules of
//! [`rules::begin`] then hold for the key:
//!
//! | recorded | a new attempt with the same key |
//! | --- | --- |
//! | nothing | proceeds |
//! | failed (no effect) | proceeds |
//! | landed | is answered with the recorded output; the tool does not run again |
//! | pending (running now) | is refused: in progress |
//! | in doubt | is refused: never retried silently; an operator resolves it |

mod key;
mod ledger;
mod record;
pub mod rules;

pub use key::{IDEMPOTENCY_ARG, IdempotencyKey, KeyError, MAX_KEY_LEN};
pub use ledger::{LedgerSettings, OutcomeLedger};
pub use record::{MAX_RECORDED_OUTPUT, Outcome, Record, RecordError, State};
pub use rules::{Begin, OutcomeError};
