//! The SSRF-proof core of `http.fetch`.
//!
//! A request passes [`policy`] first (scheme, userinfo, host and port
//! allowlist, literal addresses, method, header and body limits), with no
//! I/O. A name is then resolved once by the filtering resolver of
//! [`resolve`], which hands reqwest only addresses that passed
//! [`crate::addr::check_addr`], so the connection goes to the checked
//! address. Redirects are off unless [`HttpSettings::redirects`] sets a hop
//! limit; every hop is checked again like the first URL. The client never
//! uses a proxy (environment variables are ignored) and the response body
//! is read with a byte cap.
//!
//! The `Tool` is [`crate::tools::HttpTool`]: it parses a grant's arguments
//! with [`FetchRequest::from_json`] and calls [`HttpFetcher::fetch`]
//! through [`crate::Broker::run`].

mod error;
mod fetch;
pub mod policy;
pub mod resolve;

pub use error::HttpError;
pub use fetch::{FetchRequest, FetchResponse, HttpFetcher};
pub use policy::{HostRule, HttpSettings};
/// The HTTP method type of [`HttpSettings::methods`].
pub use reqwest::Method;
pub use resolve::{Resolver, StaticResolver, SystemResolver};
