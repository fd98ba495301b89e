//! Why a fetch was refused or failed.

use crate::addr::{AddrClass, AddrRefusal};
use std::net::IpAddr;

/// Why `http.fetch` refused a request or could not complete it.
///
/// Refusals (every variant up to [`HttpError::BodyTooLarge`]) happen before
/// any byte reaches the target, except the response limits, which are
/// checked as the response arrives. [`HttpError::Timeout`],
/// [`HttpError::Connect`] and [`HttpError::Transport`] say whether the
/// request may have reached the server (`sent`): a caller must then treat
/// the effect as possibly done.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The settings cannot build a client (for example a bad TLS setup).
    #[error("the http.fetch settings are invalid: {0}")]
    Settings(String),
    /// The arguments are not a valid request (missing or mistyped field).
    #[error("the request is invalid: {0}")]
    InvalidRequest(String),
    /// The URL does not parse, or has no host.
    #[error("the URL {url:?} is invalid: {reason}")]
    InvalidUrl {
        /// The URL (at most 256 characters of it).
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// Only `http` and `https` are fetched.
    #[error("the scheme {0:?} is not allowed: only http and https are fetched")]
    SchemeNotAllowed(String),
    /// A URL with a user name or password is refused (it hides the host).
    #[error("the URL carries a user name or password, which http.fetch refuses")]
    UserInfoNotAllowed,
    /// The host or port is not in the allowlist.
    #[error("host {host:?} port {port} is not in the http.fetch allowlist")]
    HostNotAllowed {
        /// The host as parsed.
        host: String,
        /// The port (the scheme's default if the URL gave none).
        port: u16,
    },
    /// The host is not a valid name, or names this machine (`localhost`).
    #[error("host refused: {0}")]
    HostRefused(AddrRefusal),
    /// The host is, or resolved to, an address whose class is not allowed.
    #[error("host {host:?} is address {addr}, which is {} and not allowed", .class.name())]
    AddressRefused {
        /// The host as given.
        host: String,
        /// The address refused.
        addr: IpAddr,
        /// Its class.
        class: AddrClass,
    },
    /// The host resolved to no address, or resolution failed.
    #[error("host {host:?} could not be resolved: {reason}")]
    Resolve {
        /// The host.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// The method is not in the allowed list.
    #[error("method {0} is not allowed (the settings list the allowed methods)")]
    MethodNotAllowed(String),
    /// A request header is one the broker sets itself, or is malformed.
    #[error("request header {name:?} is not allowed: {reason}")]
    HeaderNotAllowed {
        /// The header name (at most 256 characters of it).
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// Too many request or response headers, or too many bytes of them.
    #[error("the {side} headers exceed the limit of {limit} {unit}")]
    TooManyHeaders {
        /// `request` or `response`.
        side: &'static str,
        /// The limit.
        limit: usize,
        /// `headers` or `bytes`.
        unit: &'static str,
    },
    /// The request body is over the limit.
    #[error("the request body is {len} bytes, over the limit of {limit}")]
    RequestBodyTooLarge {
        /// The body's length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A redirect went to a URL the policy refuses.
    #[error("redirect to {to:?} refused: {reason}")]
    RedirectRefused {
        /// The redirect target (at most 256 characters of it).
        to: String,
        /// The refusal of that hop.
        reason: Box<HttpError>,
    },
    /// More redirects than the settings allow.
    #[error("more than {max} redirects")]
    TooManyRedirects {
        /// The hop limit.
        max: u8,
    },
    /// The response body is over the limit; reading stopped there.
    #[error("the response body is over the limit of {limit} bytes; reading stopped")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The connect or total timeout passed.
    #[error("{}", if *.sent { "the request timed out after it may have reached the server: its effect may have happened" } else { "the connection timed out before the request was sent" })]
    Timeout {
        /// Whether the request may have reached the server.
        sent: bool,
    },
    /// The connection could not be made; nothing was sent.
    #[error("could not connect: {0}")]
    Connect(String),
    /// The connection failed after the request may have been sent.
    #[error(
        "the exchange failed after the request may have reached the server (its effect may have happened): {reason}"
    )]
    Transport {
        /// Always true: kept as a field so callers match on it like [`HttpError::Timeout`].
        sent: bool,
        /// What failed.
        reason: String,
    },
}

impl HttpError {
    /// An [`AddrRefusal`] about `host`, as the error naming it.
    pub(crate) fn from_refusal(host: &str, refusal: AddrRefusal) -> HttpError {
        match refusal {
            AddrRefusal::NotGlobal { addr, class } => HttpError::AddressRefused {
                host: host.chars().take(256).collect(),
                addr,
                class,
            },
            AddrRefusal::NoAddress(h) => HttpError::Resolve {
                host: h,
                reason: "no address".into(),
            },
            other => HttpError::HostRefused(other),
        }
    }

    /// Whether the request may have reached the server.
    pub fn may_have_been_sent(&self) -> bool {
        match self {
            HttpError::Timeout { sent } | HttpError::Transport { sent, .. } => *sent,
            // A response arrived: the server got the request.
            HttpError::BodyTooLarge { .. }
            | HttpError::TooManyHeaders {
                side: "response", ..
            } => true,
            // A redirect was answered by the first server.
            HttpError::RedirectRefused { .. } | HttpError::TooManyRedirects { .. } => true,
            _ => false,
        }
    }
}
