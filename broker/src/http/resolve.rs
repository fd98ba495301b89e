//! The filtering resolver: a name is resolved once, every address it
//! resolved to is checked, and only checked addresses reach the connector.

use crate::addr::{self, AddrClass, AddrRefusal};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

/// A future answering the addresses of a name.
pub type Lookup = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// Answers the addresses of a DNS name.
pub trait Resolver: Send + Sync + 'static {
    /// The addresses of `name` (lower case, no trailing dot).
    fn lookup(&self, name: &str) -> Lookup;
}

/// The system resolver (`getaddrinfo` through `tokio::net::lookup_host`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn lookup(&self, name: &str) -> Lookup {
        let name = name.to_owned();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((name.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// A fixed table of names to addresses (tests, benches, pinned hosts).
/// A name not in the table resolves to nothing.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    table: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    /// An empty table.
    pub fn new() -> Self {
        StaticResolver::default()
    }

    /// Maps `name` (case-insensitive) to `addrs`.
    #[must_use]
    pub fn with(mut self, name: &str, addrs: &[IpAddr]) -> Self {
        self.table.insert(name.to_ascii_lowercase(), addrs.to_vec());
        self
    }
}

impl Resolver for StaticResolver {
    fn lookup(&self, name: &str) -> Lookup {
        let found = self.table.get(name).cloned().unwrap_or_default();
        Box::pin(async move { Ok(found) })
    }
}

/// A name refused by the filtering resolver: the error reqwest carries
/// back, found again in its source chain.
#[derive(Debug, thiserror::Error)]
#[error("host {host:?} refused: {refusal}")]
pub(crate) struct ResolveRefused {
    pub(crate) host: String,
    pub(crate) refusal: AddrRefusal,
}

/// The reqwest resolver: one lookup, [`addr::pin`] over every answer.
pub(crate) struct Filtering {
    pub(crate) inner: Arc<dyn Resolver>,
    pub(crate) allowed: Arc<[AddrClass]>,
}

impl reqwest::dns::Resolve for Filtering {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let lookup = match addr::parse_host(&host) {
            Ok(addr::Host::Name(n)) => self.inner.lookup(&n),
            Ok(addr::Host::Ip(ip)) => Box::pin(async move { Ok(vec![ip]) }),
            Err(refusal) => {
                return Box::pin(async move { Err(ResolveRefused { host, refusal }.into()) });
            }
        };
        let allowed = Arc::clone(&self.allowed);
        Box::pin(async move {
            let resolved = lookup.await?;
            addr::pin(&host, &resolved, &allowed)
                .map_err(|refusal| ResolveRefused { host, refusal })?;
            let addrs: reqwest::dns::Addrs =
                Box::new(resolved.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use reqwest::dns::Resolve;
    use std::str::FromStr;

    fn filtering(r: StaticResolver, allowed: &[AddrClass]) -> Filtering {
        Filtering {
            inner: Arc::new(r),
            allowed: allowed.into(),
        }
    }

    fn run<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_name_with_one_bad_address_is_refused() {
        let good = IpAddr::from([93, 184, 216, 34]);
        let bad = IpAddr::from([127, 0, 0, 1]);
        let r = StaticResolver::new().with("mixed.test", &[good, bad]);
        let f = filtering(r, &[]);
        let err = run(f.resolve(reqwest::dns::Name::from_str("mixed.test").unwrap()))
            .err()
            .unwrap();
        let refused = err.downcast_ref::<ResolveRefused>().unwrap();
        assert!(matches!(refused.refusal, AddrRefusal::NotGlobal { addr, .. } if addr == bad));
    }

    #[test]
    fn checked_addresses_pass_and_unknown_names_resolve_to_nothing() {
        let good = IpAddr::from([93, 184, 216, 34]);
        let f = filtering(StaticResolver::new().with("ok.test", &[good]), &[]);
        let got: Vec<_> = run(f.resolve(reqwest::dns::Name::from_str("ok.test").unwrap()))
            .unwrap()
            .collect();
        assert_eq!(got, vec![SocketAddr::new(good, 0)]);
        let err = run(f.resolve(reqwest::dns::Name::from_str("none.test").unwrap()))
            .err()
            .unwrap();
        let refused = err.downcast_ref::<ResolveRefused>().unwrap();
        assert!(matches!(refused.refusal, AddrRefusal::NoAddress(_)));
    }
}
