//! Reading tool arguments with errors that name the field.

use serde_json::Value;

use crate::broker::ActError;

/// The string field `name` of `args`.
pub(crate) fn string<'a>(args: &'a Value, name: &str) -> Result<&'a str, ActError> {
    match args.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ActError::Malformed(format!("{name:?} must be a string"))),
        None => Err(ActError::Malformed(format!("{name:?} is missing"))),
    }
}

/// The optional string field `name` of `args`.
pub(crate) fn opt_string<'a>(args: &'a Value, name: &str) -> Result<Option<&'a str>, ActError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ActError::Malformed(format!("{name:?} must be a string"))),
    }
}
