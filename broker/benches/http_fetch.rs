//! http.fetch's cost over a bare reqwest GET of the same loopback server,
//! side by side in one run: the broker's checks, filtering resolver and
//! bounded body read against reqwest alone. The goal is at most 1.1x.
//!
//! Run: `cargo bench -p mxp-broker --bench http_fetch`
//! The broker reaches loopback here only because the settings allow the
//! Loopback class explicitly.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use criterion::{Criterion, criterion_group, criterion_main};
use mxp_broker::addr::AddrClass;
use mxp_broker::http::{FetchRequest, HostRule, HttpFetcher, HttpSettings, StaticResolver};
use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BODY: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nhello, world\n";

/// A keep-alive HTTP/1.1 server answering every request with `BODY`.
async fn server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut have = 0;
                loop {
                    match s.read(&mut buf[have..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => have += n,
                    }
                    while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        if s.write_all(BODY).await.is_err() {
                            return;
                        }
                        buf.copy_within(end + 4..have, 0);
                        have -= end + 4;
                    }
                    if have == buf.len() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(server());
    let port = addr.port();
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let fetcher = rt.block_on(async {
        HttpFetcher::new(
            HttpSettings {
                allow: vec![HostRule {
                    host: "bench.test".into(),
                    port: Some(port),
                }],
                allowed_classes: vec![AddrClass::Loopback],
                ..HttpSettings::default()
            },
            StaticResolver::new().with("bench.test", &[loopback]),
        )
        .unwrap()
    });
    let url = format!("http://bench.test:{port}/");
    let bare_url = format!("http://127.0.0.1:{port}/");
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let settings = HttpSettings::default();
    let bare = rt.block_on(async {
        reqwest::Client::builder()
            .no_proxy()
            .tls_backend_preconfigured(tls.clone())
            .build()
            .unwrap()
    });
    // The same client with the broker's default timeouts: reqwest arms a
    // timer per request for the total timeout.
    let bare_timed = rt.block_on(async {
        reqwest::Client::builder()
            .no_proxy()
            .tls_backend_preconfigured(tls)
            .timeout(settings.timeout)
            .connect_timeout(settings.connect_timeout)
            .build()
            .unwrap()
    });

    let mut g = c.benchmark_group("http_fetch_loopback_get");
    g.bench_function("broker_fetch", |b| {
        b.to_async(&rt).iter(|| async {
            let req = FetchRequest::from_json(&serde_json::json!({ "url": url })).unwrap();
            let r = fetcher.fetch(req).await.unwrap();
            black_box(r.body.len())
        })
    });
    g.bench_function("bare_reqwest_get", |b| {
        b.to_async(&rt).iter(|| async {
            let r = bare.get(&bare_url).send().await.unwrap();
            let body = r.bytes().await.unwrap();
            black_box(body.len())
        })
    });
    g.bench_function("bare_reqwest_get_with_timeouts", |b| {
        b.to_async(&rt).iter(|| async {
            let r = bare_timed.get(&bare_url).send().await.unwrap();
            let body = r.bytes().await.unwrap();
            black_box(body.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
