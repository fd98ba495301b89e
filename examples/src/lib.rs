//! Examples of MXP programs; this library is empty on purpose.
//!
//! The programs live in `examples/` and run with `cargo run -p mxp-examples
//! --example <name>`:
//!
//! * `echo_node`: a node with one echo agent, to try `mxp call` and
//!   `mxp event` against.
//! * `governance_agent`: a remote governance agent that follows a node's
//!   audit log live, verifies it, cosigns its checkpoints as a witness, and
//!   turns the kill switch on when denials burst.
