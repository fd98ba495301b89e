//! The pure checks of a fetch: URL, host allowlist, literal addresses,
//! method, headers and body size. No I/O.

use super::HttpError;
use crate::addr::{self, AddrClass, Host};
use std::time::Duration;
use url::Url;

/// One allowed host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    /// A DNS name (matched case-insensitively, without a trailing dot) or an
    /// address literal (`203.0.113.7`, `[2001:db8::1]`). No wildcards.
    pub host: String,
    /// The port allowed; `None` allows only the scheme's default port
    /// (80 for http, 443 for https).
    pub port: Option<u16>,
}

/// Why an allowlist entry of the configuration is not a [`HostRule`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostRuleError {
    /// The host part is not a name or address a URL could carry.
    #[error("{0}")]
    Host(addr::AddrRefusal),
    /// The port is not a number from 1 to 65535.
    #[error("port {0:?} is not a number from 1 to 65535")]
    Port(String),
    /// An IPv6 address without brackets (its colons read as a port).
    #[error("write an IPv6 address in brackets, e.g. [2001:db8::1]:443")]
    BareIpv6,
}

impl HostRule {
    /// Reads `host`, `host:port`, `[v6]` or `[v6]:port` (no port: the
    /// scheme's default). The host is checked as a URL's would be: a
    /// `localhost` name or a malformed name is refused.
    ///
    /// # Errors
    /// [`HostRuleError`] naming what is wrong.
    pub fn parse(entry: &str) -> Result<HostRule, HostRuleError> {
        let (host, port) = if entry.starts_with('[') {
            match entry.split_once("]:") {
                Some((h, p)) => (format!("{h}]"), Some(p)),
                None => (entry.to_owned(), None),
            }
        } else {
            match entry.split_once(':') {
                Some((_, rest)) if rest.contains(':') => return Err(HostRuleError::BareIpv6),
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (entry.to_owned(), None),
            }
        };
        addr::parse_host(&host).map_err(HostRuleError::Host)?;
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| HostRuleError::Port(p.chars().take(16).collect()))?,
            ),
        };
        Ok(HostRule { host, port })
    }
}

/// What `http.fetch` may do.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// The hosts (and ports) that may be fetched. Empty allows nothing.
    pub allow: Vec<HostRule>,
    /// Address classes allowed besides global unicast (empty: global
    /// unicast only). IPv4-in-IPv6 and NAT64 are refused whatever this says.
    pub allowed_classes: Vec<AddrClass>,
    /// The methods allowed.
    pub methods: Vec<reqwest::Method>,
    /// The largest request body, in bytes.
    pub max_request_body: usize,
    /// The largest response body, in bytes.
    pub max_response_body: usize,
    /// The most headers, in a request and in a response.
    pub max_headers: usize,
    /// The most bytes of header names and values, in a request and in a response.
    pub max_header_bytes: usize,
    /// The whole exchange, connect to last body byte.
    pub timeout: Duration,
    /// Resolve plus TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// `None`: redirects are answered as they are; `Some(n)`: at most `n`
    /// hops are followed, each checked like the first URL.
    pub redirects: Option<u8>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            allow: Vec::new(),
            allowed_classes: Vec::new(),
            methods: vec![reqwest::Method::GET, reqwest::Method::HEAD],
            max_request_body: 64 * 1024,
            max_response_body: 1024 * 1024,
            max_headers: 64,
            max_header_bytes: 16 * 1024,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            redirects: None,
        }
    }
}

/// Request headers the broker sets itself, or that change framing or routing.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// The longest URL accepted.
pub const MAX_URL_LEN: usize = 8 * 1024;

fn cut(s: &str) -> String {
    s.chars().take(256).collect()
}

/// The host part of a URL as written: between `scheme://` (and any
/// userinfo) and the port, path, query or fragment.
fn raw_host(raw: &str) -> Option<&str> {
    let rest = raw.split_once("://")?.1;
    let end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    let authority = rest.get(..end)?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if hostport.starts_with('[') {
        let close = hostport.find(']')?;
        return hostport.get(..=close);
    }
    Some(hostport.rsplit_once(':').map_or(hostport, |(h, _)| h))
}

/// Checks a URL against the settings; answers it parsed. A literal address
/// (in the URL as parsed, or as written) must pass the address rules here:
/// reqwest does not resolve literals, so the filtering resolver never sees them.
///
/// # Errors
///
/// The [`HttpError`] naming the first rule the URL breaks.
pub fn check_url(raw: &str, settings: &HttpSettings) -> Result<Url, HttpError> {
    if raw.len() > MAX_URL_LEN {
        return Err(HttpError::InvalidUrl {
            url: cut(raw),
            reason: format!("longer than {MAX_URL_LEN} bytes"),
        });
    }
    let url = Url::parse(raw).map_err(|e| HttpError::InvalidUrl {
        url: cut(raw),
        reason: e.to_string(),
    })?;
    check_parsed(&url, Some(raw), settings)?;
    Ok(url)
}

/// [`check_url`] on a URL already parsed (a redirect hop); `raw` is the
/// URL as written, when known.
///
/// # Errors
///
/// The [`HttpError`] naming the first rule the URL breaks.
pub fn check_parsed(
    url: &Url,
    raw: Option<&str>,
    settings: &HttpSettings,
) -> Result<(), HttpError> {
    let default_port = match url.scheme() {
        "http" => 80,
        "https" => 443,
        other => return Err(HttpError::SchemeNotAllowed(cut(other))),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(HttpError::UserInfoNotAllowed);
    }
    let host_str = url.host_str().ok_or_else(|| HttpError::InvalidUrl {
        url: cut(url.as_str()),
        reason: "no host".into(),
    })?;
    let host = addr::parse_host(host_str).map_err(|r| HttpError::from_refusal(host_str, r))?;
    // The host as written, parsed by the same rules: a form the URL parser
    // kept as a name but a resolver would read as an address is caught.
    if let Some(written) = raw.and_then(raw_host) {
        match addr::parse_host(written) {
            Ok(Host::Ip(ip)) => addr::check_addr(ip, &settings.allowed_classes)
                .map_err(|r| HttpError::from_refusal(written, r))?,
            Ok(Host::Name(_)) => {}
            Err(r) => return Err(HttpError::from_refusal(written, r)),
        }
    }
    let port = url.port().unwrap_or(default_port);
    if let Host::Ip(ip) = host {
        addr::check_addr(ip, &settings.allowed_classes)
            .map_err(|r| HttpError::from_refusal(host_str, r))?;
    }
    if host_allowed(&host, port, default_port, settings) {
        Ok(())
    } else {
        Err(HttpError::HostNotAllowed {
            host: cut(host_str),
            port,
        })
    }
}

fn host_allowed(host: &Host, port: u16, default_port: u16, settings: &HttpSettings) -> bool {
    settings.allow.iter().any(|rule| {
        rule.port.unwrap_or(default_port) == port
            && addr::parse_host(&rule.host).is_ok_and(|h| h == *host)
    })
}

/// Checks the method against the allowed list.
///
/// # Errors
///
/// [`HttpError::MethodNotAllowed`].
pub fn check_method(method: &reqwest::Method, settings: &HttpSettings) -> Result<(), HttpError> {
    if settings.methods.contains(method) {
        Ok(())
    } else {
        Err(HttpError::MethodNotAllowed(cut(method.as_str())))
    }
}

/// Checks request headers: none the broker sets itself (`Host`,
/// `Connection`, framing, `Proxy-*`), within the count and byte limits.
///
/// # Errors
///
/// [`HttpError::HeaderNotAllowed`] or [`HttpError::TooManyHeaders`].
pub fn check_request_headers(
    headers: &[(String, String)],
    settings: &HttpSettings,
) -> Result<(), HttpError> {
    if headers.len() > settings.max_headers {
        return Err(HttpError::TooManyHeaders {
            side: "request",
            limit: settings.max_headers,
            unit: "headers",
        });
    }
    let bytes: usize = headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    if bytes > settings.max_header_bytes {
        return Err(HttpError::TooManyHeaders {
            side: "request",
            limit: settings.max_header_bytes,
            unit: "bytes",
        });
    }
    for (name, _) in headers {
        let lower = name.to_ascii_lowercase();
        if FORBIDDEN_HEADERS.contains(&lower.as_str()) {
            return Err(HttpError::HeaderNotAllowed {
                name: cut(name),
                reason: "the broker sets it itself",
            });
        }
        if lower.starts_with("proxy-") {
            return Err(HttpError::HeaderNotAllowed {
                name: cut(name),
                reason: "proxy headers are not sent",
            });
        }
    }
    Ok(())
}

/// Checks the request body's size.
///
/// # Errors
///
/// [`HttpError::RequestBodyTooLarge`].
pub fn check_body(len: usize, settings: &HttpSettings) -> Result<(), HttpError> {
    if len > settings.max_request_body {
        return Err(HttpError::RequestBodyTooLarge {
            len,
            limit: settings.max_request_body,
        });
    }
    Ok(())
}

/// Checks response headers against the count and byte limits.
///
/// # Errors
///
/// [`HttpError::TooManyHeaders`].
pub fn check_response_headers(
    headers: &reqwest::header::HeaderMap,
    settings: &HttpSettings,
) -> Result<(), HttpError> {
    if headers.len() > settings.max_headers {
        return Err(HttpError::TooManyHeaders {
            side: "response",
            limit: settings.max_headers,
            unit: "headers",
        });
    }
    let bytes: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    if bytes > settings.max_header_bytes {
        return Err(HttpError::TooManyHeaders {
            side: "response",
            limit: settings.max_header_bytes,
            unit: "bytes",
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn settings() -> HttpSettings {
        HttpSettings {
            allow: vec![
                HostRule {
                    host: "example.com".into(),
                    port: None,
                },
                HostRule {
                    host: "api.example.com".into(),
                    port: Some(8443),
                },
                HostRule {
                    host: "127.0.0.1".into(),
                    port: Some(8080),
                },
            ],
            ..HttpSettings::default()
        }
    }

    #[test]
    fn allowlisted_name_on_default_port_passes() {
        let s = settings();
        check_url("https://example.com/x", &s).unwrap();
        check_url("http://EXAMPLE.com./x", &s).unwrap();
        check_url("https://api.example.com:8443/", &s).unwrap();
    }

    #[test]
    fn other_host_or_port_is_refused() {
        let s = settings();
        for u in [
            "https://example.com:8443/",
            "https://api.example.com/",
            "https://evil.example.com/",
            "https://example.com.evil.net/",
        ] {
            assert!(
                matches!(check_url(u, &s), Err(HttpError::HostNotAllowed { .. })),
                "{u}"
            );
        }
    }

    #[test]
    fn scheme_and_userinfo_are_refused() {
        let s = settings();
        assert!(matches!(
            check_url("ftp://example.com/", &s),
            Err(HttpError::SchemeNotAllowed(_))
        ));
        assert!(matches!(
            check_url("file:///etc/passwd", &s),
            Err(HttpError::SchemeNotAllowed(_))
        ));
        assert!(matches!(
            check_url("https://user:pw@example.com/", &s),
            Err(HttpError::UserInfoNotAllowed)
        ));
    }

    #[test]
    fn literal_addresses_are_checked_even_when_allowlisted() {
        let s = settings();
        for u in [
            "http://127.0.0.1:8080/",
            "http://2130706433:8080/",
            "http://0x7f.1:8080/",
            "http://017700000001:8080/",
            "http://127.1:8080/",
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]:8080/",
            "http://169.254.169.254/",
            "http://[fd00::1]/",
            "http://100.64.0.1/",
        ] {
            assert!(
                matches!(check_url(u, &s), Err(HttpError::AddressRefused { .. })),
                "{u}"
            );
        }
        let mut loop_ok = settings();
        loop_ok.allowed_classes = vec![AddrClass::Loopback];
        check_url("http://127.0.0.1:8080/", &loop_ok).unwrap();
        check_url("http://0x7f.1:8080/", &loop_ok).unwrap();
    }

    #[test]
    fn localhost_names_are_refused() {
        let s = settings();
        for u in [
            "http://localhost/",
            "http://localhost./",
            "http://a.localhost/",
        ] {
            assert!(
                matches!(check_url(u, &s), Err(HttpError::HostRefused(_))),
                "{u}"
            );
        }
    }

    #[test]
    fn allowlist_entries_parse_with_or_without_a_port() {
        let r = |s: &str| HostRule::parse(s);
        assert_eq!(
            r("api.example.com:8443").unwrap(),
            HostRule {
                host: "api.example.com".into(),
                port: Some(8443)
            }
        );
        assert_eq!(r("example.com").unwrap().port, None);
        assert_eq!(r("[::1]:80").unwrap().host, "[::1]");
        assert_eq!(r("[::1]").unwrap().port, None);
        assert_eq!(r("127.0.0.1:8080").unwrap().port, Some(8080));
        assert_eq!(r("::1"), Err(HostRuleError::BareIpv6));
        assert!(matches!(r("a.com:0"), Err(HostRuleError::Port(_))));
        assert!(matches!(r("a.com:http"), Err(HostRuleError::Port(_))));
        assert!(matches!(r("localhost:80"), Err(HostRuleError::Host(_))));
        assert!(matches!(r("a b:80"), Err(HostRuleError::Host(_))));
        assert!(matches!(r(""), Err(HostRuleError::Host(_))));
    }

    #[test]
    fn raw_host_reads_the_written_host() {
        assert_eq!(raw_host("http://u:p@0x7f.1:80/x"), Some("0x7f.1"));
        assert_eq!(raw_host("http://[::1]:80/"), Some("[::1]"));
        assert_eq!(raw_host("https://a.b?c"), Some("a.b"));
    }

    #[test]
    fn methods_headers_and_body_are_limited() {
        let s = settings();
        check_method(&reqwest::Method::GET, &s).unwrap();
        assert!(matches!(
            check_method(&reqwest::Method::POST, &s),
            Err(HttpError::MethodNotAllowed(_))
        ));
        for h in [
            "Host",
            "connection",
            "Proxy-Authorization",
            "Transfer-Encoding",
        ] {
            let hs = vec![(h.to_string(), "x".to_string())];
            assert!(
                matches!(
                    check_request_headers(&hs, &s),
                    Err(HttpError::HeaderNotAllowed { .. })
                ),
                "{h}"
            );
        }
        let many: Vec<_> = (0..65)
            .map(|i| (format!("x-{i}"), "v".to_string()))
            .collect();
        assert!(matches!(
            check_request_headers(&many, &s),
            Err(HttpError::TooManyHeaders {
                unit: "headers",
                ..
            })
        ));
        let big = vec![("x-big".to_string(), "v".repeat(17 * 1024))];
        assert!(matches!(
            check_request_headers(&big, &s),
            Err(HttpError::TooManyHeaders { unit: "bytes", .. })
        ));
        check_body(64 * 1024, &s).unwrap();
        assert!(matches!(
            check_body(64 * 1024 + 1, &s),
            Err(HttpError::RequestBodyTooLarge { .. })
        ));
    }
}
