//! Secrets by reference.
//!
//! A plan step never holds a secret: its arguments name one, as
//! `{"$secret": "NAME"}`, and the policy decision and the capability token
//! bind that reference, not the value. Only the broker, at execution time,
//! [`resolve`]s references against a [`SecretStore`] (the environment, or a
//! secrets file only its owner can read), hands the tool the value in
//! memory that is wiped when the run ends, and runs everything the tool
//! returns, including its errors, through a [`Redactor`] that replaces the
//! value, and its base64, hex and URL-encoded forms, with a marker.

mod redact;
mod resolve;
mod store;

pub use redact::{MIN_DERIVED_LEN, Redacted, Redactor};
pub use resolve::{MAX_DEPTH, Resolved, has_reference, resolve};
pub use store::{
    ENV_PREFIX, MAX_FILE_BYTES, MAX_NAME_LEN, MAX_SECRETS, MAX_VALUE_BYTES, SecretError,
    SecretName, SecretStore,
};

/// The key that marks a secret reference in tool arguments.
pub const SECRET_REF_KEY: &str = "$secret";
