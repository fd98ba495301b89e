//! `mxp://host:port/agent-id` URLs.

use std::fmt;
use std::str::FromStr;

use mxp_protocol::AgentId;

use crate::TransportError;

/// The default MXP port.
pub const DEFAULT_PORT: u16 = 9000;

/// An MXP address: a node (`mxp://host:port`) and optionally an agent on it.
///
/// ```
/// use mxp_transport::MxpUrl;
/// let url: MxpUrl = "mxp://127.0.0.1:9000/67e55044-10b1-426f-9247-bb680e5fe0c8".parse()?;
/// assert_eq!(url.host(), "127.0.0.1");
/// assert_eq!(url.port(), 9000);
/// assert_eq!(url.to_string(), "mxp://127.0.0.1:9000/67e55044-10b1-426f-9247-bb680e5fe0c8");
/// let node: MxpUrl = "mxp://[::1]".parse()?; // port defaults to 9000
/// assert_eq!(node.to_string(), "mxp://[::1]:9000");
/// # Ok::<(), mxp_transport::TransportError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MxpUrl {
    host: String,
    port: u16,
    agent: Option<AgentId>,
}

impl MxpUrl {
    /// A URL for `agent` (if any) on `host:port`.
    pub fn new(host: impl Into<String>, port: u16, agent: Option<AgentId>) -> MxpUrl {
        MxpUrl {
            host: host.into(),
            port,
            agent,
        }
    }

    /// The host: a name, an IPv4 address or an IPv6 address (without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The UDP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The agent, if the URL names one.
    pub fn agent(&self) -> Option<AgentId> {
        self.agent
    }

    /// The same node with `agent`.
    #[must_use]
    pub fn with_agent(mut self, agent: AgentId) -> MxpUrl {
        self.agent = Some(agent);
        self
    }

    /// `host:port` as a socket address string (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Resolves the host to socket addresses.
    ///
    /// # Errors
    /// [`TransportError::Connect`] if the name does not resolve.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is held between awaits; a dropped lookup is simply abandoned.
    pub async fn resolve(&self) -> Result<Vec<std::net::SocketAddr>, TransportError> {
        let authority = self.authority();
        let addrs: Vec<_> = tokio::net::lookup_host(&authority)
            .await
            .map_err(|e| TransportError::Connect {
                addr: authority.clone(),
                reason: format!("cannot resolve host: {e}"),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(TransportError::Connect {
                addr: authority,
                reason: "host resolves to no address".into(),
            });
        }
        Ok(addrs)
    }
}

impl fmt::Display for MxpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mxp://{}", self.authority())?;
        if let Some(agent) = self.agent {
            write!(f, "/{agent}")?;
        }
        Ok(())
    }
}

impl FromStr for MxpUrl {
    type Err = TransportError;

    fn from_str(s: &str) -> Result<MxpUrl, TransportError> {
        let err = |reason: &str| TransportError::InvalidUrl {
            url: s.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = s
            .trim()
            .strip_prefix("mxp://")
            .ok_or_else(|| err("must start with mxp://"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| err("IPv6 host lacks its closing ']'"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| err("expected ':' after ']'"))?,
                ),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(err("missing host"));
        }
        if host.contains(|c: char| c.is_whitespace() || c == '@' || c == '?' || c == '#') {
            return Err(err("host contains characters a host cannot hold"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| err("port must be a number from 1 to 65535"))?,
        };
        let agent = match path.trim_end_matches('/') {
            "" => None,
            id => Some(
                id.parse::<AgentId>()
                    .map_err(|_| err("the path must be an agent id (a UUID)"))?,
            ),
        };
        Ok(MxpUrl::new(host, port, agent))
    }
}

impl serde::Serialize for MxpUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MxpUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MxpUrl, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in [
            "mxp://localhost:9000",
            "mxp://mesh.example.com:9001/67e55044-10b1-426f-9247-bb680e5fe0c8",
            "mxp://[::1]:9000/67e55044-10b1-426f-9247-bb680e5fe0c8",
            "mxp://10.0.1.5:9000",
        ] {
            let u: MxpUrl = s.parse().unwrap();
            assert_eq!(u.to_string(), s);
        }
        let u: MxpUrl = "mxp://host".parse().unwrap();
        assert_eq!(u.port(), DEFAULT_PORT);
        let u: MxpUrl = "mxp://host:1/".parse().unwrap();
        assert_eq!(u.agent(), None);
    }

    #[test]
    fn rejects_bad_urls_with_a_reason() {
        for (s, why) in [
            ("http://x:1", "mxp://"),
            ("mxp://", "host"),
            ("mxp://:9000", "host"),
            ("mxp://h:0", "port"),
            ("mxp://h:70000", "port"),
            ("mxp://h:x", "port"),
            ("mxp://h:1/not-a-uuid", "agent id"),
            ("mxp://[::1", "']'"),
        ] {
            let e = s.parse::<MxpUrl>().unwrap_err().to_string();
            assert!(e.contains(why), "{s}: {e}");
        }
    }
}
