//! The pure rules: may an attempt proceed, given what is recorded?

use super::{IdempotencyKey, Outcome, Record, State};

/// What an attempt does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// Act (a pending record is written first).
    Proceed,
    /// The effect landed already: answer with its recorded output (`None`
    /// when it was too large to keep); do not act again.
    Landed(Option<Vec<u8>>),
}

/// Why an attempt may not act.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutcomeError {
    /// An attempt with this key is running now.
    #[error("{tool} with idempotency key {key} is already running")]
    InProgress {
        /// The tool.
        tool: String,
        /// The key.
        key: IdempotencyKey,
    },
    /// An earlier attempt may have happened: it is not retried silently.
    #[error(
        "{tool} with idempotency key {key} is in doubt (an earlier attempt may have happened); it is not retried: resolve it, or retry with a new key"
    )]
    InDoubt {
        /// The tool.
        tool: String,
        /// The key.
        key: IdempotencyKey,
    },
    /// The key was used for another tool.
    #[error("idempotency key {key} belongs to {recorded}, not {tool}")]
    OtherTool {
        /// The tool asked for.
        tool: String,
        /// The tool recorded.
        recorded: String,
        /// The key.
        key: IdempotencyKey,
    },
    /// The ledger could not be read or written.
    #[error("the outcome ledger failed: {0}")]
    Store(String),
}

/// The rule of the module table ([`super`]).
///
/// # Errors
/// [`OutcomeError`] for an attempt that must not act.
pub fn begin(
    key: IdempotencyKey,
    tool: &str,
    recorded: Option<&Record>,
) -> Result<Begin, OutcomeError> {
    let Some(r) = recorded else {
        return Ok(Begin::Proceed);
    };
    if r.tool != tool {
        return Err(OutcomeError::OtherTool {
            tool: tool.into(),
            recorded: r.tool.clone(),
            key,
        });
    }
    match &r.state {
        State::Pending => Err(OutcomeError::InProgress {
            tool: tool.into(),
            key,
        }),
        State::Done {
            outcome: Outcome::Landed,
            output,
            ..
        } => Ok(Begin::Landed(output.clone())),
        State::Done {
            outcome: Outcome::Failed,
            ..
        } => Ok(Begin::Proceed),
        State::Done { .. } => Err(OutcomeError::InDoubt {
            tool: tool.into(),
            key,
        }),
    }
}

/// What a pending record found at open becomes: in doubt.
pub fn recover(r: Record, now_ms: u64) -> Option<Record> {
    match r.state {
        State::Pending => Some(Record {
            state: State::Done {
                outcome: Outcome::InDoubt,
                finished_ms: now_ms,
                output: None,
            },
            ..r
        }),
        State::Done { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(state: State) -> Record {
        Record {
            tool: "http.fetch".into(),
            started_ms: 1,
            state,
        }
    }
    fn done(outcome: Outcome, output: Option<Vec<u8>>) -> State {
        State::Done {
            outcome,
            finished_ms: 2,
            output,
        }
    }

    #[test]
    fn the_table_holds() {
        let k = IdempotencyKey([3; 32]);
        let t = "http.fetch";
        assert_eq!(begin(k, t, None).unwrap(), Begin::Proceed);
        assert_eq!(
            begin(k, t, Some(&rec(done(Outcome::Failed, None)))).unwrap(),
            Begin::Proceed
        );
        assert_eq!(
            begin(k, t, Some(&rec(done(Outcome::Landed, Some(b"1".to_vec()))))).unwrap(),
            Begin::Landed(Some(b"1".to_vec()))
        );
        assert!(matches!(
            begin(k, t, Some(&rec(State::Pending))),
            Err(OutcomeError::InProgress { .. })
        ));
        let e = begin(k, t, Some(&rec(done(Outcome::InDoubt, None)))).unwrap_err();
        assert!(matches!(e, OutcomeError::InDoubt { .. }));
        assert!(e.to_string().contains("not retried"), "{e}");
        assert!(matches!(
            begin(k, "shell.exec", Some(&rec(State::Pending))),
            Err(OutcomeError::OtherTool { .. })
        ));
    }

    #[test]
    fn pending_becomes_in_doubt_at_recovery() {
        let r = recover(rec(State::Pending), 9).unwrap();
        assert_eq!(r.state, done(Outcome::InDoubt, None).clone_with(9));
        assert!(recover(rec(done(Outcome::Landed, None)), 9).is_none());
    }

    impl State {
        fn clone_with(&self, finished: u64) -> State {
            match self {
                State::Done {
                    outcome, output, ..
                } => State::Done {
                    outcome: *outcome,
                    finished_ms: finished,
                    output: output.clone(),
                },
                State::Pending => State::Pending,
            }
        }
    }
}
