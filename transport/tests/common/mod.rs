//! Shared test scaffolding: a node on loopback with an echo agent, clients,
//! and a bare quinn client for bytes the typed client would not send.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::time::Duration;

use mxp_protocol::AgentId;
use mxp_transport::{
    Bus, Client, Envelope, Limits, Mailbox, MxpUrl, NodeIdentity, PeerTrust, Server,
};

/// A server on 127.0.0.1:0 serving `bus`.
pub fn server(bus: &Bus, trust: PeerTrust, limits: Limits) -> (Server, NodeIdentity) {
    let id = NodeIdentity::generate().unwrap();
    let server = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        &id,
        trust,
        limits,
        bus.clone(),
    )
    .unwrap();
    (server, id)
}

/// A client in development trust mode.
pub fn client(limits: Limits) -> Client {
    Client::new(
        &NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        limits,
    )
    .unwrap()
}

pub fn url(addr: SocketAddr, agent: AgentId) -> MxpUrl {
    MxpUrl::new(addr.ip().to_string(), addr.port(), Some(agent))
}

/// Answers every Call with its own params as the result, concurrently.
pub fn spawn_echo(mut mailbox: Mailbox) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(env) = mailbox.recv().await {
            tokio::spawn(answer_echo(env));
        }
    })
}

async fn answer_echo(mut env: Envelope) {
    let Some(reply) = env.take_reply() else {
        return;
    };
    let call = <mxp_protocol::Call as mxp_protocol::TypedPayload>::from_frame(env.frame()).unwrap();
    let body = call.parse_body().unwrap();
    if body.method == "sleep" {
        let ms = body.params.as_u64().unwrap_or(60_000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let _ = reply.ok(body.params);
}

/// Polls `f` until it is true or `deadline` passes.
pub async fn eventually(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A client presenting `identity` and checking servers against `trust`.
pub fn client_with(identity: &NodeIdentity, trust: PeerTrust, limits: Limits) -> Client {
    Client::new(identity, trust, limits).unwrap()
}

/// An agent that takes every Call and never answers it (the reply ports are
/// kept, so the server sees neither an answer nor a dropped Call).
pub fn spawn_silent(mut mailbox: Mailbox) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(env) = mailbox.recv().await {
            held.push(env);
        }
    })
}

/// Waits until the async condition `f` holds, polling until `deadline`.
pub async fn eventually_async<F, Fut>(deadline: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A 32-byte MXP header written by hand: valid magic, `msg_type`, no flags,
/// the given message id, and a declared payload length of `payload_len`.
pub fn raw_header(msg_type: u8, message_id: u64, payload_len: u64) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[0..4].copy_from_slice(&mxp_protocol::MAGIC.to_le_bytes());
    h[4] = msg_type;
    h[8..16].copy_from_slice(&message_id.to_le_bytes());
    h[16..24].copy_from_slice(&message_id.to_le_bytes());
    h[24..32].copy_from_slice(&payload_len.to_le_bytes());
    h
}

pub mod raw {
    //! A bare quinn client speaking MXP's TLS setup (ALPN `mxp/1`, a
    //! self-signed client certificate, any server certificate with a valid
    //! handshake signature), for sending bytes the typed client would not.

    use std::net::SocketAddr;
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{
        CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime,
    };
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct AnyServer(Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyServer {
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
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("TLS 1.2 is not used by MXP".into()))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// A fresh self-signed client identity: its chain and key.
    pub fn fresh_identity() -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let ck = rcgen::generate_simple_self_signed(vec!["raw-test-client".to_owned()]).unwrap();
        let chain = vec![ck.cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        (chain, key)
    }

    /// A client configuration presenting `identity` (none: no client
    /// certificate at all) and accepting any server certificate.
    pub fn client_config(
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> quinn::ClientConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
        let mut tls = match identity {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
            None => builder.with_no_client_auth(),
        };
        tls.alpn_protocols = vec![mxp_transport::ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        quinn::ClientConfig::new(Arc::new(crypto))
    }

    /// A client endpoint on `bind` (e.g. "127.0.0.3:0": another source
    /// address on loopback).
    pub fn endpoint(bind: &str) -> quinn::Endpoint {
        quinn::Endpoint::client(bind.parse().unwrap()).unwrap()
    }

    /// Connects `endpoint` to `addr` with `config`.
    pub async fn try_connect(
        endpoint: &quinn::Endpoint,
        config: quinn::ClientConfig,
        addr: SocketAddr,
    ) -> Result<quinn::Connection, quinn::ConnectionError> {
        endpoint
            .connect_with(config, addr, "mxp-node")
            .unwrap()
            .await
    }

    /// A connection to `addr` from a fresh self-signed identity.
    pub async fn connect(addr: SocketAddr) -> quinn::Connection {
        let endpoint = endpoint("127.0.0.1:0");
        try_connect(&endpoint, client_config(Some(fresh_identity())), addr)
            .await
            .unwrap()
    }
}
