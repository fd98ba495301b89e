//! http.fetch against real loopback servers: every SSRF variant is refused
//! before a connection, limits are named, and the positive controls show
//! the counting servers would have seen a connection.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Server, read_head, serve, sink};
use mxp_broker::addr::AddrClass;
use mxp_broker::http::{
    FetchRequest, HostRule, HttpError, HttpFetcher, HttpSettings, StaticResolver,
};
use std::net::IpAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn get(url: &str) -> FetchRequest {
    FetchRequest::from_json(&serde_json::json!({ "url": url })).unwrap()
}

fn rule(host: &str, port: u16) -> HostRule {
    HostRule {
        host: host.into(),
        port: Some(port),
    }
}

fn fetcher(settings: HttpSettings, resolver: StaticResolver) -> HttpFetcher {
    HttpFetcher::new(settings, resolver).unwrap()
}

/// With Loopback allowed and `ok.test` mapped to the sink, a fetch reaches
/// it. Connections are accepted in order, so once this one was answered
/// every earlier connection attempt was accepted too: `accepted()` is then
/// exact.
async fn control(sink: &Server) -> usize {
    let f = fetcher(
        HttpSettings {
            allow: vec![rule("ok.test", sink.port())],
            allowed_classes: vec![AddrClass::Loopback],
            ..HttpSettings::default()
        },
        StaticResolver::new().with("ok.test", &[LOOPBACK]),
    );
    let r = f
        .fetch(get(&format!("http://ok.test:{}/", sink.port())))
        .await
        .unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    sink.accepted()
}

#[tokio::test]
async fn literal_and_local_hosts_are_refused_before_any_connection() {
    let sink = sink().await;
    let p = sink.port();
    let hosts = [
        "127.0.0.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "169.254.169.254",
        "2130706433",
        "0x7f.1",
        "017700000001",
        "127.1",
        "localhost.",
        "[fd00::1]",
        "100.64.0.1",
    ];
    // Every host is allowlisted: the address rules alone must refuse them.
    let settings = HttpSettings {
        allow: hosts.iter().map(|h| rule(h, p)).collect(),
        ..HttpSettings::default()
    };
    let f = fetcher(
        settings,
        StaticResolver::new().with("localhost", &[LOOPBACK]),
    );
    for host in hosts {
        let err = f
            .fetch(get(&format!("http://{host}:{p}/")))
            .await
            .unwrap_err();
        match (&err, host) {
            (HttpError::HostRefused(_), "localhost.") => {}
            (HttpError::AddressRefused { .. }, h) if h != "localhost." => {}
            _ => panic!("{host}: unexpected {err:?}"),
        }
        assert!(!err.to_string().is_empty());
    }
    assert_eq!(control(&sink).await, 1, "only the control reached the sink");
}

#[tokio::test]
async fn an_allowlisted_name_resolving_to_loopback_is_refused() {
    let sink = sink().await;
    let f = fetcher(
        HttpSettings {
            allow: vec![rule("inside.test", sink.port())],
            ..HttpSettings::default()
        },
        StaticResolver::new().with("inside.test", &[IpAddr::from([93, 184, 216, 34]), LOOPBACK]),
    );
    let err = f
        .fetch(get(&format!("http://inside.test:{}/", sink.port())))
        .await
        .unwrap_err();
    assert!(
        matches!(err, HttpError::AddressRefused { addr, class: AddrClass::Loopback, .. } if addr == LOOPBACK),
        "{err:?}"
    );
    assert_eq!(control(&sink).await, 1);
}

#[tokio::test]
async fn a_name_not_in_the_allowlist_is_refused() {
    let sink = sink().await;
    let f = fetcher(
        HttpSettings {
            allow: vec![rule("ok.test", sink.port())],
            allowed_classes: vec![AddrClass::Loopback],
            ..HttpSettings::default()
        },
        StaticResolver::new().with("other.test", &[LOOPBACK]),
    );
    for url in [
        format!("http://other.test:{}/", sink.port()),
        format!("http://ok.test:{}/", sink.port() ^ 1),
        "http://ok.test/".to_owned(),
    ] {
        let err = f.fetch(get(&url)).await.unwrap_err();
        assert!(
            matches!(err, HttpError::HostNotAllowed { .. }),
            "{url}: {err:?}"
        );
    }
    assert_eq!(control(&sink).await, 1);
}

/// What a refused hop's reason must match.
type Expect = fn(&HttpError) -> bool;

async fn redirector(location: &str) -> Server {
    serve(
        format!(
            "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .into_bytes(),
    )
    .await
}

#[tokio::test]
async fn redirects_to_refused_targets_are_not_followed() {
    let sink = sink().await;
    let sp = sink.port();
    let resolver = || {
        StaticResolver::new()
            .with("a.test", &[LOOPBACK])
            .with("target.test", &[LOOPBACK])
    };
    let cases: [(String, Expect); 3] = [
        // Not allowlisted.
        (format!("http://target.test:{sp}/"), |e| {
            matches!(e, HttpError::HostNotAllowed { .. })
        }),
        // A literal address: checked by the redirect policy itself.
        (format!("http://127.0.0.1:{sp}/"), |e| {
            matches!(e, HttpError::HostNotAllowed { .. })
        }),
        ("http://169.254.169.254/latest/meta-data/".to_owned(), |e| {
            matches!(
                e,
                HttpError::AddressRefused {
                    class: AddrClass::Metadata,
                    ..
                }
            )
        }),
    ];
    for (location, expected) in cases {
        let a = redirector(&location).await;
        let f = fetcher(
            HttpSettings {
                allow: vec![rule("a.test", a.port())],
                allowed_classes: vec![AddrClass::Loopback],
                redirects: Some(3),
                ..HttpSettings::default()
            },
            resolver(),
        );
        let err = f
            .fetch(get(&format!("http://a.test:{}/", a.port())))
            .await
            .unwrap_err();
        match &err {
            HttpError::RedirectRefused { to, reason } => {
                assert!(to.starts_with(location.as_str()), "{to}");
                assert!(expected(reason), "{location}: {reason:?}");
            }
            other => panic!("{location}: unexpected {other:?}"),
        }
        assert!(err.may_have_been_sent());
        assert_eq!(a.accepted(), 1, "the first server was reached");
    }
    // Positive control: allowlist the target and the redirect is followed.
    let a = redirector(&format!("http://target.test:{sp}/")).await;
    let f = fetcher(
        HttpSettings {
            allow: vec![rule("a.test", a.port()), rule("target.test", sp)],
            allowed_classes: vec![AddrClass::Loopback],
            redirects: Some(3),
            ..HttpSettings::default()
        },
        resolver(),
    );
    let r = f
        .fetch(get(&format!("http://a.test:{}/", a.port())))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.final_url, format!("http://target.test:{sp}/"));
    assert_eq!(
        sink.accepted(),
        1,
        "only the followed redirect reached the sink"
    );
}

#[tokio::test]
async fn redirects_are_off_by_default_and_hops_are_limited() {
    let sink = sink().await;
    let target = format!("http://target.test:{}/", sink.port());
    let a = redirector(&target).await;
    let resolver = StaticResolver::new()
        .with("a.test", &[LOOPBACK])
        .with("target.test", &[LOOPBACK]);
    let mut settings = HttpSettings {
        allow: vec![rule("a.test", a.port()), rule("target.test", sink.port())],
        allowed_classes: vec![AddrClass::Loopback],
        ..HttpSettings::default()
    };
    let f = fetcher(settings.clone(), resolver.clone());
    let r = f
        .fetch(get(&format!("http://a.test:{}/", a.port())))
        .await
        .unwrap();
    assert_eq!(r.status, 302);
    assert!(
        r.headers
            .iter()
            .any(|(n, v)| n == "location" && *v == target)
    );
    assert_eq!(sink.accepted(), 0);

    // A loop: a.test redirects to itself.
    let looping = redirector("/again").await;
    settings.allow.push(rule("a.test", looping.port()));
    settings.redirects = Some(2);
    let f = fetcher(settings, resolver);
    let err = f
        .fetch(get(&format!("http://a.test:{}/", looping.port())))
        .await
        .unwrap_err();
    assert!(
        matches!(err, HttpError::TooManyRedirects { max: 2 }),
        "{err:?}"
    );
    assert_eq!(looping.accepted(), 3, "the first request and two hops");
}

#[tokio::test]
async fn method_header_and_body_limits_are_named_and_nothing_is_sent() {
    let sink = sink().await;
    let f = fetcher(
        HttpSettings {
            allow: vec![rule("ok.test", sink.port())],
            allowed_classes: vec![AddrClass::Loopback],
            max_request_body: 16,
            ..HttpSettings::default()
        },
        StaticResolver::new().with("ok.test", &[LOOPBACK]),
    );
    let url = format!("http://ok.test:{}/", sink.port());
    let req = |extra: serde_json::Value| {
        let mut v = serde_json::json!({ "url": url });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        FetchRequest::from_json(&v).unwrap()
    };
    let err = f
        .fetch(req(serde_json::json!({"method": "POST"})))
        .await
        .unwrap_err();
    assert!(
        matches!(err, HttpError::MethodNotAllowed(ref m) if m == "POST"),
        "{err:?}"
    );
    for h in [
        "Host",
        "Proxy-Authorization",
        "Connection",
        "Content-Length",
    ] {
        let err = f
            .fetch(req(serde_json::json!({"headers": {h: "x"}})))
            .await
            .unwrap_err();
        assert!(
            matches!(err, HttpError::HeaderNotAllowed { .. }),
            "{h}: {err:?}"
        );
    }
    let err = f
        .fetch(req(
            serde_json::json!({"method": "GET", "body": "x".repeat(17)}),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, HttpError::RequestBodyTooLarge { len: 17, limit: 16 }),
        "{err:?}"
    );
    assert!(matches!(
        FetchRequest::from_json(&serde_json::json!({"url": 1})),
        Err(HttpError::InvalidRequest(_))
    ));
    assert!(matches!(
        FetchRequest::from_json(&serde_json::json!({"url": "http://x/", "proxy": "p"})),
        Err(HttpError::InvalidRequest(_))
    ));
    assert_eq!(control(&sink).await, 1);
}

/// A server streaming an unbounded body; reports how many bytes it wrote
/// before the client went away.
async fn streamer(content_length: Option<u64>) -> (u16, tokio::sync::oneshot::Receiver<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        read_head(&mut s).await;
        let head = match content_length {
            Some(n) => format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n"),
            None => "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_owned(),
        };
        s.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b'a'; 64 * 1024];
        let mut written = 0u64;
        while written < 100 * 1024 * 1024 {
            if s.write_all(&chunk).await.is_err() {
                break;
            }
            written += chunk.len() as u64;
        }
        let _ = tx.send(written);
    });
    (port, rx)
}

#[tokio::test]
async fn a_response_body_over_the_cap_is_cut() {
    for declared in [None, Some(100 * 1024 * 1024)] {
        let (port, written) = streamer(declared).await;
        let f = fetcher(
            HttpSettings {
                allow: vec![rule("big.test", port)],
                allowed_classes: vec![AddrClass::Loopback],
                max_response_body: 1024 * 1024,
                ..HttpSettings::default()
            },
            StaticResolver::new().with("big.test", &[LOOPBACK]),
        );
        let err = f
            .fetch(get(&format!("http://big.test:{port}/")))
            .await
            .unwrap_err();
        assert!(
            matches!(err, HttpError::BodyTooLarge { limit: 1048576 }),
            "{err:?}"
        );
        drop(f);
        let written = tokio::time::timeout(Duration::from_secs(10), written)
            .await
            .unwrap()
            .unwrap();
        // The client stopped reading: the server's writes failed long
        // before 100 MB (what it wrote is the cap plus socket buffers).
        assert!(
            written < 50 * 1024 * 1024,
            "{declared:?}: server wrote {written}"
        );
    }
}

#[tokio::test]
async fn response_headers_are_bounded() {
    let mut head = String::from("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n");
    for i in 0..80 {
        head.push_str(&format!("x-h{i}: v\r\n"));
    }
    head.push_str("\r\n");
    let server = serve(head.into_bytes()).await;
    let f = fetcher(
        HttpSettings {
            allow: vec![rule("h.test", server.port())],
            allowed_classes: vec![AddrClass::Loopback],
            ..HttpSettings::default()
        },
        StaticResolver::new().with("h.test", &[LOOPBACK]),
    );
    let err = f
        .fetch(get(&format!("http://h.test:{}/", server.port())))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            HttpError::TooManyHeaders {
                side: "response",
                limit: 64,
                unit: "headers"
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_silent_server_times_out_as_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let head = read_head(&mut s).await;
        let _ = got_tx.send(head);
        // Hold the connection open and never answer.
        std::future::pending::<()>().await;
        drop(s);
    });
    let f = fetcher(
        HttpSettings {
            allow: vec![rule("slow.test", port)],
            allowed_classes: vec![AddrClass::Loopback],
            timeout: Duration::from_millis(300),
            ..HttpSettings::default()
        },
        StaticResolver::new().with("slow.test", &[LOOPBACK]),
    );
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        f.fetch(get(&format!("http://slow.test:{port}/"))),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(matches!(err, HttpError::Timeout { sent: true }), "{err:?}");
    assert!(err.may_have_been_sent());
    let head = got_rx.await.unwrap();
    assert!(
        head.starts_with(b"GET / HTTP/1.1\r\n"),
        "the server got the request"
    );
}

#[tokio::test]
async fn a_refused_connection_is_named_as_not_sent() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let f = fetcher(
        HttpSettings {
            allow: vec![rule("gone.test", port)],
            allowed_classes: vec![AddrClass::Loopback],
            ..HttpSettings::default()
        },
        StaticResolver::new().with("gone.test", &[LOOPBACK]),
    );
    let err = f
        .fetch(get(&format!("http://gone.test:{port}/")))
        .await
        .unwrap_err();
    assert!(matches!(err, HttpError::Connect(_)), "{err:?}");
    assert!(!err.may_have_been_sent());
}

#[tokio::test]
async fn a_body_that_is_not_utf8_comes_back_as_base64() {
    let mut resp = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n".to_vec();
    resp.extend_from_slice(&[0xff, 0x00, 0xfe]);
    let server = serve(resp).await;
    let f = fetcher(
        HttpSettings {
            allow: vec![rule("bin.test", server.port())],
            allowed_classes: vec![AddrClass::Loopback],
            ..HttpSettings::default()
        },
        StaticResolver::new().with("bin.test", &[LOOPBACK]),
    );
    let r = f
        .fetch(get(&format!("http://bin.test:{}/", server.port())))
        .await
        .unwrap();
    assert!(r.body_base64);
    assert_eq!(r.body, "/wD+");
}
