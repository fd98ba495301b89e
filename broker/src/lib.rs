//! The tool broker of an MXP node.
//!
//! Every tool the broker will run acts only through a
//! `mxp_actors::gate::Grant`: the gate decided, a capability token proves
//! it, the enforcer verified it. The checks each tool makes before acting
//! are pure functions here, tested without I/O; the tools around them are
//! thin. So far: [`addr`], the address rules of `http.fetch`, and
//! [`http`], the `http.fetch` core built on them (allowlist, filtering
//! resolver, checked redirects, no proxy, bounded body), which a `Tool`
//! wrapper calls.
#![forbid(unsafe_code)]

pub mod addr;
pub mod http;
