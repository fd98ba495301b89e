//! Replacing `{"$secret": "NAME"}` references with values, inside the broker.

use secrecy::ExposeSecret;
use serde_json::Value;
use zeroize::Zeroize;

use super::{SECRET_REF_KEY, SecretError, SecretName, SecretStore};

/// Deepest argument nesting walked.
pub const MAX_DEPTH: usize = 64;

/// Arguments with their secret references replaced by values (the broker
/// redacts with a [`super::Redactor`] over every secret it holds). Every
/// string of the arguments is wiped when this is dropped.
pub struct Resolved {
    args: Value,
    used: Vec<SecretName>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("secrets", &self.used)
            .finish_non_exhaustive()
    }
}

impl Resolved {
    /// The arguments the tool acts on (values in place of references).
    pub fn args(&self) -> &Value {
        &self.args
    }

    /// The secrets referenced, in order of first use.
    pub fn used(&self) -> &[SecretName] {
        &self.used
    }
}

impl Drop for Resolved {
    fn drop(&mut self) {
        let mut stack = vec![&mut self.args];
        while let Some(v) = stack.pop() {
            match v {
                Value::String(s) => s.zeroize(),
                Value::Array(a) => stack.extend(a.iter_mut()),
                Value::Object(m) => stack.extend(m.values_mut()),
                Value::Null | Value::Bool(_) | Value::Number(_) => {}
            }
        }
    }
}

fn reference(v: &Value) -> Result<Option<&str>, SecretError> {
    let Value::Object(m) = v else { return Ok(None) };
    let Some(r) = m.get(SECRET_REF_KEY) else {
        return Ok(None);
    };
    match r {
        Value::String(name) if m.len() == 1 => Ok(Some(name)),
        _ => Err(SecretError::BadReference),
    }
}

/// Replaces each `{"$secret": "NAME"}` in `args` with the value of `NAME`.
///
/// # Errors
/// [`SecretError::Unknown`] for an undefined name, [`SecretError::BadName`],
/// [`SecretError::BadReference`] for a malformed reference, and
/// [`SecretError::TooDeep`].
pub fn resolve(args: &Value, store: &SecretStore) -> Result<Resolved, SecretError> {
    let mut used: Vec<SecretName> = Vec::new();
    let args = walk(args, store, &mut used, 0)?;
    Ok(Resolved { args, used })
}

fn walk(
    v: &Value,
    store: &SecretStore,
    used: &mut Vec<SecretName>,
    depth: usize,
) -> Result<Value, SecretError> {
    if depth > MAX_DEPTH {
        return Err(SecretError::TooDeep(MAX_DEPTH));
    }
    if let Some(name) = reference(v)? {
        let name = SecretName::new(name)?;
        let value = store
            .get(name.as_str())
            .ok_or_else(|| SecretError::Unknown(name.to_string()))?;
        if !used.contains(&name) {
            used.push(name);
        }
        return Ok(Value::String(value.expose_secret().to_owned()));
    }
    Ok(match v {
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| walk(x, store, used, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), walk(x, store, used, depth + 1)?)))
                .collect::<Result<_, SecretError>>()?,
        ),
        other => other.clone(),
    })
}

/// Whether `args` holds any secret reference (without resolving it).
pub fn has_reference(args: &Value) -> bool {
    let mut stack = vec![args];
    while let Some(v) = stack.pop() {
        if matches!(reference(v), Ok(Some(_)) | Err(_)) {
            return true;
        }
        match v {
            Value::Array(a) => stack.extend(a.iter()),
            Value::Object(m) => stack.extend(m.values()),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;
    use serde_json::json;

    fn store() -> SecretStore {
        let mut s = SecretStore::new();
        s.insert("TOKEN", SecretString::from("tok-CANARY-123"))
            .unwrap();
        s
    }

    #[test]
    fn references_become_values_only_here() {
        let args = json!({"url": "https://x.test/", "headers": {"auth": {"$secret": "TOKEN"}}, "n": [{"$secret": "TOKEN"}]});
        let r = resolve(&args, &store()).unwrap();
        assert_eq!(r.args()["headers"]["auth"], "tok-CANARY-123");
        assert_eq!(r.args()["n"][0], "tok-CANARY-123");
        assert_eq!(r.used().len(), 1);
        assert!(!format!("{r:?}").contains("CANARY"));
        assert!(has_reference(&args));
        assert!(!has_reference(&json!({"a": {"b": 1}})));
        let red = crate::secret::Redactor::new([("TOKEN", "tok-CANARY-123")]);
        let (out, rep) = red.redact_string("got tok-CANARY-123".into());
        assert_eq!(out, "got [redacted:TOKEN]");
        assert_eq!(rep.count, 1);
    }

    #[test]
    fn bad_references_are_named() {
        let s = store();
        let e = resolve(&json!({"$secret": "NOPE"}), &s).unwrap_err();
        assert!(
            matches!(e, SecretError::Unknown(ref n) if n == "NOPE"),
            "{e}"
        );
        assert!(e.to_string().contains("MXP_SECRET_NOPE"));
        for bad in [json!({"$secret": 1}), json!({"$secret": "TOKEN", "x": 1})] {
            assert!(matches!(
                resolve(&bad, &s).unwrap_err(),
                SecretError::BadReference
            ));
        }
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!([deep]);
        }
        assert!(matches!(
            resolve(&deep, &s).unwrap_err(),
            SecretError::TooDeep(_)
        ));
    }
}
