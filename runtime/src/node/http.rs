//! The metrics listener: `/metrics` (Prometheus text), `/healthz` and
//! `/readyz` on a small HTTP/1 server whose every resource is bounded.
//!
//! Whoever can reach the listener may send anything, so: only `GET`; a
//! request head of at most [`MAX_REQUEST_HEAD_BYTES`] and [`MAX_HEADERS`]
//! headers, read within [`HEADER_READ_TIMEOUT`]; one request per connection,
//! each connection closed after [`CONNECTION_DEADLINE`] whatever happens; at
//! most [`MAX_CONNECTIONS`] at once (one more is closed at once); and at most
//! [`REQUESTS_PER_SEC`] requests a second over the whole listener (burst
//! [`REQUEST_BURST`]), past which requests are answered 429.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use mxp_transport::TokenBucket;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once; one more is closed as soon as it is accepted.
pub const MAX_CONNECTIONS: usize = 32;
/// Bytes of a request's head (request line and headers); past it: 431.
pub const MAX_REQUEST_HEAD_BYTES: usize = 8192;
/// Headers in a request; past it: 431.
pub const MAX_HEADERS: usize = 32;
/// Time a client has to send its request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a connection may live, request and response included.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// Requests a second over the whole listener; past it: 429.
pub const REQUESTS_PER_SEC: f64 = 20.0;
/// Requests allowed in a burst.
pub const REQUEST_BURST: f64 = 40.0;

/// Where the node is in its life, as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Readiness {
    /// Not serving yet: `/readyz` answers 503.
    Starting,
    /// Started: `/readyz` answers 200.
    Ready,
    /// Shutting down: `/readyz` answers 503.
    Stopping,
}

/// The node's readiness, shared between the node's `main` and the listener.
#[derive(Debug, Clone)]
pub struct Health(Arc<AtomicU8>);

impl Default for Health {
    fn default() -> Health {
        Health::new()
    }
}

impl Health {
    /// Starting.
    pub fn new() -> Health {
        Health(Arc::new(AtomicU8::new(0)))
    }

    /// Moves to `r`.
    pub fn set(&self, r: Readiness) {
        let v = match r {
            Readiness::Starting => 0,
            Readiness::Ready => 1,
            Readiness::Stopping => 2,
        };
        self.0.store(v, Ordering::Release);
    }

    /// Where the node is.
    pub fn get(&self) -> Readiness {
        match self.0.load(Ordering::Acquire) {
            0 => Readiness::Starting,
            1 => Readiness::Ready,
            _ => Readiness::Stopping,
        }
    }
}

type Render = dyn Fn() -> String + Send + Sync;

struct State {
    render: Box<Render>,
    health: Health,
    rate: Mutex<TokenBucket>,
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

const TEXT: &str = "text/plain; charset=utf-8";
/// The Prometheus text exposition format.
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

impl State {
    fn answer<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        let allowed = self
            .rate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .try_take(Instant::now());
        if !allowed {
            let mut r = response(StatusCode::TOO_MANY_REQUESTS, TEXT, "too many requests\n");
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        if req.method() != Method::GET {
            let mut r = response(StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            return r;
        }
        match req.uri().path() {
            "/metrics" => response(StatusCode::OK, PROMETHEUS, (self.render)()),
            "/healthz" => response(StatusCode::OK, TEXT, "ok\n"),
            "/readyz" => match self.health.get() {
                Readiness::Ready => response(StatusCode::OK, TEXT, "ready\n"),
                Readiness::Starting => {
                    response(StatusCode::SERVICE_UNAVAILABLE, TEXT, "starting\n")
                }
                Readiness::Stopping => {
                    response(StatusCode::SERVICE_UNAVAILABLE, TEXT, "shutting down\n")
                }
            },
            _ => response(
                StatusCode::NOT_FOUND,
                TEXT,
                "not found: try /metrics, /healthz or /readyz\n",
            ),
        }
    }
}

/// Serves `/metrics` (the text `render` returns), `/healthz` and `/readyz`
/// (from `health`) on `listener`, in a task spawned on the current tokio
/// runtime, until the runtime stops. Must run inside a tokio runtime.
pub fn serve(
    listener: TcpListener,
    render: impl Fn() -> String + Send + Sync + 'static,
    health: Health,
) {
    let state = Arc::new(State {
        render: Box::new(render),
        health,
        rate: Mutex::new(TokenBucket::new(
            REQUESTS_PER_SEC,
            REQUEST_BURST,
            Instant::now(),
        )),
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or the peer gave up: back off
                    // briefly rather than spin.
                    tracing::debug!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!("metrics listener: connection limit reached, closing one");
                drop(stream);
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let mut b = http1::Builder::new();
                b.timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .max_buf_size(MAX_REQUEST_HEAD_BYTES)
                    .max_headers(MAX_HEADERS)
                    .keep_alive(false);
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(state.answer(&req)) }
                });
                let conn = b.serve_connection(TokioIo::new(stream), service);
                match tokio::time::timeout(CONNECTION_DEADLINE, conn).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "metrics listener: connection failed")
                    }
                    Err(_) => {
                        tracing::debug!("metrics listener: connection past its deadline, closed")
                    }
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(health: Health) -> State {
        State {
            render: Box::new(|| "mxp_x 1\n".to_owned()),
            health,
            rate: Mutex::new(TokenBucket::new(1.0, 3.0, Instant::now())),
        }
    }

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    #[test]
    fn routes_methods_readiness_and_rate() {
        let health = Health::new();
        let s = state(health.clone());
        assert_eq!(s.answer(&get("/readyz")).status(), 503);
        health.set(Readiness::Ready);
        assert_eq!(s.answer(&get("/readyz?verbose")).status(), 200);
        let post = Request::post("/metrics").body(()).unwrap();
        let r = s.answer(&post);
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()[header::ALLOW], "GET");
        // Burst of 3 spent: the next is refused, whatever the path.
        let r = s.answer(&get("/healthz"));
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let s = state(health.clone());
        assert_eq!(s.answer(&get("/metrics")).status(), 200);
        assert_eq!(s.answer(&get("/nope")).status(), 404);
        health.set(Readiness::Stopping);
        assert_eq!(s.answer(&get("/readyz")).status(), 503);
        assert_eq!(health.get(), Readiness::Stopping);
    }
}
