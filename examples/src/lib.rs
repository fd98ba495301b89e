//! Examples of MXP programs; this library is empty on purpose.
//!
//! The programs live in `examples/` and run with `cargo run -p mxp-examples
//! --example <name>`:
//!
//! * `echo_node`: a node with one echo agent, to try `mxp call` and
//!   `mxp event` against.
