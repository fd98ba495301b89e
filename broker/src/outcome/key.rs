//! Idempotency keys: which attempts are the same effect.

use std::fmt;

use mxp_protocol::{AgentId, SessionId};
use serde_json::Value;

/// The top-level argument a caller sets to name an effect across retries:
/// a retry of a Call with the same key, agent, session and tool is the
/// same effect. The broker removes it before the tool sees its arguments.
pub const IDEMPOTENCY_ARG: &str = "$idempotency_key";

/// Longest caller key.
pub const MAX_KEY_LEN: usize = 128;

/// The key of one effect.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdempotencyKey(pub [u8; 32]);

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({self})")
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Short enough to read in an error; unique in practice.
        for b in self.0.get(..8).unwrap_or_default() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A caller key that is not a short string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not a string of 1 to 128 bytes.
    #[error("{IDEMPOTENCY_ARG} must be a string of 1 to {MAX_KEY_LEN} bytes")]
    Bad,
}

fn derive(parts: &[&[u8]]) -> IdempotencyKey {
    let mut h = blake3::Hasher::new_derive_key("mxp-broker idempotency key v1");
    for p in parts {
        h.update(&(p.len() as u64).to_be_bytes());
        h.update(p);
    }
    IdempotencyKey(*h.finalize().as_bytes())
}

impl IdempotencyKey {
    /// The key a caller named, for this agent, session and tool.
    pub fn named(agent: &AgentId, session: &SessionId, tool: &str, key: &str) -> IdempotencyKey {
        derive(&[
            b"named",
            agent.as_bytes(),
            session.as_str().as_bytes(),
            tool.as_bytes(),
            key.as_bytes(),
        ])
    }

    /// The key of an attempt no caller named: its token's nonce, which no
    /// other attempt shares.
    pub fn of_nonce(issuer: &[u8; 32], nonce: &[u8; 16]) -> IdempotencyKey {
        derive(&[b"nonce", issuer, nonce])
    }

    /// Splits the caller's key off `args`: `(args without it, the key)`.
    ///
    /// # Errors
    /// [`KeyError::Bad`] for a key that is not a short string.
    pub fn split(args: &Value) -> Result<(Value, Option<String>), KeyError> {
        let Value::Object(m) = args else {
            return Ok((args.clone(), None));
        };
        let Some(k) = m.get(IDEMPOTENCY_ARG) else {
            return Ok((args.clone(), None));
        };
        let key = match k {
            Value::String(s) if !s.is_empty() && s.len() <= MAX_KEY_LEN => s.clone(),
            _ => return Err(KeyError::Bad),
        };
        let mut m = m.clone();
        m.remove(IDEMPOTENCY_ARG);
        Ok((Value::Object(m), Some(key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_separate_agent_session_tool_and_name() {
        let a = AgentId::from_bytes([1; 16]);
        let s: SessionId = "s-1".parse().unwrap();
        let k = IdempotencyKey::named(&a, &s, "http.fetch", "k1");
        assert_eq!(k, IdempotencyKey::named(&a, &s, "http.fetch", "k1"));
        assert_ne!(k, IdempotencyKey::named(&a, &s, "http.fetch", "k2"));
        assert_ne!(k, IdempotencyKey::named(&a, &s, "shell.exec", "k1"));
        let s2: SessionId = "s-2".parse().unwrap();
        assert_ne!(k, IdempotencyKey::named(&a, &s2, "http.fetch", "k1"));
        assert_ne!(
            IdempotencyKey::of_nonce(&[0; 32], &[1; 16]),
            IdempotencyKey::of_nonce(&[0; 32], &[2; 16])
        );
    }

    #[test]
    fn the_caller_key_is_split_off() {
        let (args, key) =
            IdempotencyKey::split(&json!({"url": "x", IDEMPOTENCY_ARG: "order-7"})).unwrap();
        assert_eq!(args, json!({"url": "x"}));
        assert_eq!(key.as_deref(), Some("order-7"));
        assert_eq!(IdempotencyKey::split(&json!({"a": 1})).unwrap().1, None);
        for bad in [json!(1), json!(""), json!("x".repeat(129))] {
            assert_eq!(
                IdempotencyKey::split(&json!({IDEMPOTENCY_ARG: bad})),
                Err(KeyError::Bad)
            );
        }
    }
}
