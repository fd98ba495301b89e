//! A Call's round trip on loopback with a 256-byte JSON body, at 1, 16 and 256
//! calls in flight, three contenders (and one diagnostic) in the same run:
//!
//! * `mxp`: `mxp_transport::Server` serving a bus with an echo agent (answers
//!   at once with the Call's params), called with `Client::call_raw` and a
//!   pre-built 256-byte JSON body; mutual TLS, both sides `AnyIdentified`;
//! * `quinn`: bare quinn with the same TLS setup style (self-signed rcgen
//!   certificate, rustls on ring, TLS 1.3, ALPN `mxp/1`, the same transport
//!   settings) but *no client authentication* and a client verifier that
//!   accepts any server certificate (still checking the handshake signature);
//!   one bidirectional stream per request: the client writes the exact bytes
//!   of the mxp Call frame, finishes; the server reads to the end, writes the
//!   same bytes back, finishes; the client reads to the end;
//! * `http`: HTTP/1.1 + JSON over plain TCP (no TLS): an axum server with one
//!   POST route that parses the JSON body and answers it back as JSON (same
//!   size), called by hyper-util's legacy client (keep-alive pool: N calls in
//!   flight open up to N connections). TCP_NODELAY on both sides;
//! * `quinn_exact` (diagnostic, not a goal contender): `quinn` where both
//!   sides read exactly the frame's length and drop the `RecvStream` without
//!   reading to the end, as mxp's `read_frame` does (one STOP_SENDING each way).
//!
//! Everything (clients, servers, the echo agent) runs on one tokio
//! multi-thread runtime with 2 worker threads.
//!
//! Run: `cargo bench -p mxp-benches --bench quic`
//!
//! Criterion reports the time per call (wall time / calls, so at N in flight
//! it is 1 / throughput) and calls/s. The `RESULT` lines on stderr give p50 and
//! p99 of the per-call latencies this file measured (warm-up included) and
//! calls/s, one per contender and concurrency; `RESULT quic wire` lines count
//! datagrams and frames per call on the client's QUIC connection.
//! Goals: mxp p50 ≤ 1.15 × quinn p50; vs http, p50 no worse at 1 in flight
//! and ≥ 2 × the calls/s at 256. Results: docs/BENCHMARKS-transport.md.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use bytes::Bytes;
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mxp_benches::{BODY_LEN, CallFn, Samples, call_body, drive, runtime};
use mxp_protocol::{AgentId, Call, Flags, TypedPayload};
use mxp_transport::{Bus, Client, Limits, Mailbox, MxpUrl, NodeIdentity, PeerTrust, Server};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::runtime::Runtime;

const INFLIGHT: [usize; 3] = [1, 16, 256];
const TIMEOUT: Duration = Duration::from_secs(10);
const ALPN: &[u8] = b"mxp/1";

// ---- mxp ---------------------------------------------------------------

/// Answers every Call at once with its params.
async fn echo_agent(mut mailbox: Mailbox) {
    let mut buf = Vec::with_capacity(256);
    while mailbox.recv_many(&mut buf, 256).await > 0 {
        for mut env in buf.drain(..) {
            let Some(reply) = env.take_reply() else {
                continue;
            };
            let call = Call::from_frame(env.frame()).unwrap();
            let params = call.parse_body().unwrap().params;
            let _ = reply.ok(params);
        }
    }
}

struct Mxp {
    _server: Server,
    client: Arc<Client>,
    url: MxpUrl,
    agent: AgentId,
}

fn mxp_setup(rt: &Runtime) -> Mxp {
    let _guard = rt.enter();
    // The benchmark measures the transport, not the per-peer rate limit
    // (default 50 000 frames/s, burst 100 000): lift it.
    let limits = Limits {
        peer_rate_per_sec: 1e9,
        peer_burst: 1e9,
        ..Limits::default()
    };
    let bus = Bus::new(4096);
    let agent = AgentId::from_bytes([1; 16]);
    rt.spawn(echo_agent(bus.register(agent).unwrap()));
    let server = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        &NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        limits.clone(),
        bus,
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    let client = Client::new(
        &NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        limits,
    )
    .unwrap();
    Mxp {
        _server: server,
        client: Arc::new(client),
        url: MxpUrl::new(addr.ip().to_string(), addr.port(), Some(agent)),
        agent,
    }
}

fn mxp_call(m: &Mxp, body: &Bytes) -> CallFn {
    let (client, url, agent, body) = (m.client.clone(), m.url.clone(), m.agent, body.clone());
    Arc::new(move || {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        Box::pin(async move {
            let r = client.call_raw(&url, agent, body, TIMEOUT).await.unwrap();
            assert!(!r.body.is_empty());
        })
    })
}

// ---- bare quinn ----------------------------------------------------------

/// Accepts any server certificate, still checking the handshake signature
/// (what `PeerTrust::AnyIdentified` does, without computing a fingerprint).
#[derive(Debug)]
struct AnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The transport settings mxp derives from `Limits::default()`.
fn quinn_transport() -> quinn::TransportConfig {
    let mut tc = quinn::TransportConfig::default();
    tc.max_concurrent_bidi_streams(256u32.into());
    tc.max_concurrent_uni_streams(64u32.into());
    tc.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(30)).unwrap(),
    ));
    tc
}

/// Echoes one request. With `exact`, reads exactly that many bytes and never
/// sees the end of the stream, as mxp's `read_frame` does: dropping the
/// `RecvStream` then makes quinn send a STOP_SENDING.
async fn quinn_serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    exact: Option<usize>,
) {
    let data = match exact {
        None => match recv.read_to_end(64 * 1024).await {
            Ok(d) => d,
            Err(_) => return,
        },
        Some(len) => {
            let mut d = vec![0u8; len];
            if recv.read_exact(&mut d).await.is_err() {
                return;
            }
            d
        }
    };
    if send.write_chunk(Bytes::from(data)).await.is_ok() {
        let _ = send.finish();
    }
    drop(recv);
}

async fn quinn_accept(endpoint: quinn::Endpoint, exact: Option<usize>) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(quinn_serve_stream(send, recv, exact));
            }
        });
    }
}

struct Bare {
    _server: quinn::Endpoint,
    _client: quinn::Endpoint,
    conn: quinn::Connection,
    exact: Option<usize>,
}

fn quinn_setup(rt: &Runtime, exact: Option<usize>) -> Bare {
    let _guard = rt.enter();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ck = rcgen::generate_simple_self_signed(vec!["mxp-node".to_owned()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key.into())
        .unwrap();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    sc.transport_config(Arc::new(quinn_transport()));
    let server = quinn::Endpoint::server(sc, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr().unwrap();
    rt.spawn(quinn_accept(server.clone(), exact));

    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut cc = quinn::ClientConfig::new(Arc::new(crypto));
    let mut tc = quinn_transport();
    tc.keep_alive_interval(Some(Duration::from_secs(10)));
    cc.transport_config(Arc::new(tc));
    // The same socket as mxp's client: dual-stack [::]:0, else 0.0.0.0:0.
    let mut client = quinn::Endpoint::client(SocketAddr::from(([0u16; 8], 0)))
        .or_else(|_| quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0))))
        .unwrap();
    client.set_default_client_config(cc);
    let conn = rt.block_on(async { client.connect(addr, "mxp-node").unwrap().await.unwrap() });
    Bare {
        _server: server,
        _client: client,
        conn,
        exact,
    }
}

fn quinn_call(b: &Bare, request: &Bytes) -> CallFn {
    let (conn, request, exact) = (b.conn.clone(), request.clone(), b.exact);
    Arc::new(move || {
        let (conn, request) = (conn.clone(), request.clone());
        Box::pin(async move {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            let len = request.len();
            send.write_chunk(request).await.unwrap();
            send.finish().unwrap();
            match exact {
                None => {
                    let answer = recv.read_to_end(64 * 1024).await.unwrap();
                    assert_eq!(answer.len(), len);
                }
                Some(n) => {
                    let mut answer = vec![0u8; n];
                    recv.read_exact(&mut answer).await.unwrap();
                }
            }
        })
    })
}

// ---- HTTP/1.1 + JSON -----------------------------------------------------

async fn http_echo(
    axum::Json(body): axum::Json<serde_json::Value>,
) -> axum::Json<serde_json::Value> {
    axum::Json(body)
}

struct Http {
    client: HttpClient<HttpConnector, Full<Bytes>>,
    uri: hyper::Uri,
}

fn http_setup(rt: &Runtime) -> Http {
    let _guard = rt.enter();
    let app = axum::Router::new().route("/echo", axum::routing::post(http_echo));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = HttpClient::builder(TokioExecutor::new()).build(connector);
    Http {
        client,
        uri: format!("http://{addr}/echo").parse().unwrap(),
    }
}

fn http_call(h: &Http, body: &Bytes) -> CallFn {
    let (client, uri, body) = (h.client.clone(), h.uri.clone(), body.clone());
    Arc::new(move || {
        let (client, uri, body) = (client.clone(), uri.clone(), body.clone());
        Box::pin(async move {
            let req = hyper::Request::post(uri)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(body))
                .unwrap();
            let resp = client.request(req).await.unwrap();
            assert!(resp.status().is_success());
            let answer = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(answer.len(), BODY_LEN);
        })
    })
}

// ---- the benchmark ---------------------------------------------------------

/// What the client's connection sent and received per call while measured.
fn report_wire(
    contender: &str,
    inflight: usize,
    calls: u64,
    before: &quinn::ConnectionStats,
    after: &quinn::ConnectionStats,
) {
    let per = |a: u64, b: u64| (a - b) as f64 / calls.max(1) as f64;
    eprintln!(
        "RESULT quic wire {contender} inflight={inflight} datagrams_tx_per_call={:.2} datagrams_rx_per_call={:.2} stop_sending_tx_per_call={:.2} stop_sending_rx_per_call={:.2} reset_stream_tx_per_call={:.2} reset_stream_rx_per_call={:.2} acks_tx_per_call={:.2} acks_rx_per_call={:.2}",
        per(after.udp_tx.datagrams, before.udp_tx.datagrams),
        per(after.udp_rx.datagrams, before.udp_rx.datagrams),
        per(after.frame_tx.stop_sending, before.frame_tx.stop_sending),
        per(after.frame_rx.stop_sending, before.frame_rx.stop_sending),
        per(after.frame_tx.reset_stream, before.frame_tx.reset_stream),
        per(after.frame_rx.reset_stream, before.frame_rx.reset_stream),
        per(after.frame_tx.acks, before.frame_tx.acks),
        per(after.frame_rx.acks, before.frame_rx.acks),
    );
}

fn round_trip(c: &mut Criterion) {
    let rt = runtime();
    let body = call_body();
    let mxp = mxp_setup(&rt);
    let bare = quinn_setup(&rt, None);
    let http = http_setup(&rt);
    // The bare contender sends exactly the bytes of an mxp Call frame.
    let request = Call {
        target: mxp.agent,
        timeout_secs: 10,
        body: body.clone(),
    }
    .to_frame(1, 1, Flags::EMPTY)
    .unwrap()
    .into_bytes();
    // Diagnostic: bare quinn reading the way mxp's read_frame does.
    let bare_exact = quinn_setup(&rt, Some(request.len()));
    eprintln!(
        "RESULT quic setup body_bytes={} call_frame_bytes={} runtime=multi_thread(2 workers)",
        body.len(),
        request.len()
    );

    let mut group = c.benchmark_group("quic_call");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    for inflight in INFLIGHT {
        let mut results = Vec::new();
        for (name, call) in [
            ("mxp", mxp_call(&mxp, &body)),
            ("quinn", quinn_call(&bare, &request)),
            ("http", http_call(&http, &body)),
            ("quinn_exact", quinn_call(&bare_exact, &request)),
        ] {
            // Open the connections (N for HTTP) before measuring.
            rt.block_on(drive((inflight * 4) as u64, inflight, call.clone()));
            // The client's QUIC connection, to count what each call puts on the wire.
            let conn = match name {
                "mxp" => Some(rt.block_on(mxp.client.connect(&mxp.url)).unwrap().0),
                "quinn" => Some(bare.conn.clone()),
                "quinn_exact" => Some(bare_exact.conn.clone()),
                _ => None,
            };
            let before = conn.as_ref().map(quinn::Connection::stats);
            let mut samples = Samples::default();
            group.bench_function(
                BenchmarkId::new(name, format!("inflight={inflight}")),
                |b| {
                    b.iter_custom(|iters| {
                        let (wall, lat) = rt.block_on(drive(iters, inflight, call.clone()));
                        samples.calls += iters;
                        samples.wall += wall;
                        samples.latencies.extend(lat);
                        wall
                    })
                },
            );
            results.push((name, samples.report("quic", name, inflight)));
            if let (Some(conn), Some(before), true) = (conn, before, samples.calls > 0) {
                report_wire(name, inflight, samples.calls, &before, &conn.stats());
            }
        }
        let finite = results.iter().all(|(_, (p50, _))| p50.is_finite());
        if let (
            true,
            [
                (_, (mxp_p50, mxp_rate)),
                (_, (quinn_p50, quinn_rate)),
                (_, (http_p50, http_rate)),
                ..,
            ],
        ) = (finite, &results[..])
        {
            eprintln!(
                "RESULT quic ratio inflight={inflight} mxp_p50/quinn_p50={:.2} (goal <= 1.15) mxp_p50/http_p50={:.2} (goal at 1: <= 1) mxp_calls/http_calls={:.2} (goal at 256: >= 2) mxp_calls/quinn_calls={:.2}",
                mxp_p50 / quinn_p50,
                mxp_p50 / http_p50,
                mxp_rate / http_rate,
                mxp_rate / quinn_rate
            );
        }
    }
    group.finish();

    // One part of mxp's per-call cost on its own: finding the cached
    // connection (`Client::connect` runs on every call).
    let mut group = c.benchmark_group("quic_parts");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    group.bench_function("mxp_client_connect_cached", |b| {
        b.iter_custom(|iters| {
            let (client, url) = (mxp.client.clone(), mxp.url.clone());
            rt.block_on(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(client.connect(&url).await.unwrap());
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
