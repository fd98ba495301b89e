//! The broker: the one path every brokered tool's act takes.
//!
//! ```text
//!   Grant ─▶ idempotency key ─▶ ledger: pending (effects only) ─▶ secrets resolved
//!         ─▶ act, under the tool's time limit ─▶ output and errors redacted, size-checked
//!         ─▶ ledger: landed | failed | in doubt
//! ```

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use mxp_actors::gate::Grant;
use mxp_actors::{EffectClass, ToolError};
use serde_json::Value;

use crate::outcome::{Begin, IdempotencyKey, Outcome, OutcomeLedger};
use secrecy::ExposeSecret;

use crate::secret::{Redactor, SecretStore, resolve};

/// The time and size a tool's act may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolLimits {
    /// Longest an act may run; past it, an act with an external effect is
    /// in doubt and one without has failed.
    pub timeout: Duration,
    /// Largest output, as JSON bytes.
    pub max_output_bytes: usize,
}

impl Default for ToolLimits {
    fn default() -> ToolLimits {
        ToolLimits {
            timeout: Duration::from_secs(30),
            max_output_bytes: 4 << 20,
        }
    }
}

/// How a tool's act went wrong; the broker turns it into a [`ToolError`]
/// and an [`Outcome`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActError {
    /// The arguments do not make sense for the tool; nothing was done.
    #[error("{0}")]
    Malformed(String),
    /// The act is outside what the tool allows (a path outside the root, a
    /// host off the allowlist); nothing was done.
    #[error("{0}")]
    Refused(String),
    /// The act failed; nothing happened.
    #[error("{0}")]
    Failed(String),
    /// The act may have happened (sent, then no answer).
    #[error("{0}")]
    InDoubt(String),
}

/// A boxed act.
pub type ActFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, ActError>> + Send + 'a>>;

/// What a brokered tool does with its resolved arguments.
pub trait Act: Send + Sync {
    /// Acts on `args` (secret values in place of references; the caller's
    /// idempotency key removed).
    ///
    /// # Cancel safety
    /// Dropped when the tool's time limit passes or the caller gives up.
    fn act<'x>(&'x self, args: &'x Value) -> ActFuture<'x>;
}

/// What every brokered tool shares: the secrets and the outcome ledger.
#[derive(Debug, Default)]
pub struct Broker {
    secrets: SecretStore,
    // Every secret the broker holds, not only the ones an act used: a file
    // or a server may hand a value back by another path.
    redactor: Redactor,
    ledger: Option<OutcomeLedger>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Broker {
    /// A broker with these secrets and, for tools with external effects,
    /// this ledger (`None`: outcomes are only audited, and a retry is not
    /// recognised).
    pub fn new(secrets: SecretStore, ledger: Option<OutcomeLedger>) -> Broker {
        let redactor = Redactor::new(secrets.names().filter_map(|n| {
            secrets
                .get(n.as_str())
                .map(|v| (n.as_str(), v.expose_secret()))
        }));
        Broker {
            secrets,
            redactor,
            ledger,
        }
    }

    /// Redacts every secret the broker holds from `v` (for callers that
    /// report what a tool returned by another path).
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The ledger.
    pub fn ledger(&self) -> Option<&OutcomeLedger> {
        self.ledger.as_ref()
    }

    /// Runs `act` for the granted intent: the arguments it receives have
    /// the caller's `$idempotency_key` removed and secret references
    /// replaced by values; what it returns is redacted and bounded.
    ///
    /// # Errors
    /// [`ToolError::Malformed`], [`ToolError::Refused`],
    /// [`ToolError::Failed`] or [`ToolError::InDoubt`], with secret values
    /// redacted from their text.
    ///
    /// # Cancel safety
    /// Dropping the future mid-act leaves an effect's ledger record
    /// pending; the next open of the ledger turns it to in doubt.
    pub async fn run<A: Act + ?Sized>(
        &self,
        tool: &str,
        effect: EffectClass,
        limits: &ToolLimits,
        grant: &Grant<'_>,
        act: &A,
    ) -> Result<Value, ToolError> {
        let malformed = |reason: String| ToolError::Malformed {
            tool: tool.into(),
            reason,
        };
        let (args, named) =
            IdempotencyKey::split(grant.args()).map_err(|e| malformed(e.to_string()))?;
        let tracked = effect != EffectClass::ReadOnly;
        let ledger = self.ledger.as_ref().filter(|_| tracked);
        let started = now_ms();
        // Only effects have keys: a read needs none on its path.
        let key = if !tracked {
            None
        } else {
            Some(match &named {
                Some(k) => {
                    let i = grant.intent();
                    let session = i.session.as_ref().ok_or_else(|| ToolError::Refused {
                        tool: tool.into(),
                        reason: "an idempotency key needs a session".into(),
                    })?;
                    IdempotencyKey::named(&i.agent, session, tool, k)
                }
                None => {
                    let t = grant.token();
                    IdempotencyKey::of_nonce(t.issuer().as_bytes(), &t.nonce().0)
                }
            })
        };
        let shown = key.map(|k| k.to_string()).unwrap_or_default();
        if let (Some(l), Some(key)) = (ledger, key) {
            match l
                .begin(key, tool, started)
                .map_err(|e| ToolError::Refused {
                    tool: tool.into(),
                    reason: e.to_string(),
                })? {
                Begin::Proceed => {}
                Begin::Landed(out) => {
                    let output = out
                        .and_then(|o| serde_json::from_slice::<Value>(&o).ok())
                        .unwrap_or(Value::Null);
                    return Ok(serde_json::json!({
                        "idempotent_replay": true,
                        "key": shown,
                        "output": output,
                    }));
                }
            }
        }
        let finish = |outcome: Outcome, output: Option<Vec<u8>>| -> Result<(), ToolError> {
            match (ledger, key) {
                (Some(l), Some(key)) => l
                    .finish(key, tool, started, outcome, output, now_ms())
                    .map_err(|e| ToolError::InDoubt {
                        tool: tool.into(),
                        reason: format!("{e} (key {key})"),
                    }),
                _ => Ok(()),
            }
        };
        let resolved = match resolve(&args, &self.secrets) {
            Ok(r) => r,
            Err(e) => {
                finish(Outcome::Failed, None)?;
                return Err(malformed(e.to_string()));
            }
        };
        let redact = |s: String| self.redactor.redact_string(s).0;
        let ran = tokio::time::timeout(limits.timeout, act.act(resolved.args())).await;
        let result = match ran {
            Err(_elapsed) if tracked => Err(ActError::InDoubt(format!(
                "no answer within {} ms; the effect may have happened (key {shown})",
                limits.timeout.as_millis()
            ))),
            Err(_elapsed) => Err(ActError::Failed(format!(
                "no answer within {} ms",
                limits.timeout.as_millis()
            ))),
            Ok(r) => r,
        };
        match result {
            Ok(mut out) => {
                self.redactor.redact_value(&mut out);
                // The ledger keeps an effect's output; a read needs only
                // its size, computed without writing it out.
                let len = if ledger.is_some() {
                    let bytes = serde_json::to_vec(&out).unwrap_or_default();
                    let len = bytes.len();
                    finish(Outcome::Landed, Some(bytes))?;
                    len
                } else {
                    // Nothing to scan when even the bound is within it.
                    let bound = crate::json_size::json_size_bound(&out);
                    if bound <= limits.max_output_bytes {
                        bound
                    } else {
                        crate::json_size::json_size(&out)
                    }
                };
                if len > limits.max_output_bytes {
                    return Err(ToolError::Failed {
                        tool: tool.into(),
                        reason: format!(
                            "its output of {} bytes is over the limit of {} (the act itself completed)",
                            len, limits.max_output_bytes
                        ),
                    });
                }
                Ok(out)
            }
            Err(e) => {
                let in_doubt = matches!(e, ActError::InDoubt(_));
                finish(
                    if in_doubt {
                        Outcome::InDoubt
                    } else {
                        Outcome::Failed
                    },
                    None,
                )?;
                let tool = tool.to_owned();
                Err(match e {
                    ActError::Malformed(r) => ToolError::Malformed {
                        tool,
                        reason: redact(r),
                    },
                    ActError::Refused(r) => ToolError::Refused {
                        tool,
                        reason: redact(r),
                    },
                    ActError::Failed(r) => ToolError::Failed {
                        tool,
                        reason: redact(r),
                    },
                    ActError::InDoubt(r) => ToolError::InDoubt {
                        tool,
                        reason: redact(r),
                    },
                })
            }
        }
    }
}
