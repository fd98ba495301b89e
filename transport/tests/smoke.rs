//! The QUIC path end to end: a Call, its Response, an unknown agent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use mxp_protocol::{AgentId, CallBody, ErrorCode};
use mxp_transport::{Bus, CallError, Limits, PeerTrust};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_over_quic_gets_its_response() {
    let bus = Bus::new(1024);
    let agent = AgentId::from_bytes([1; 16]);
    common::spawn_echo(bus.register(agent).unwrap());
    let (server, _) = common::server(&bus, PeerTrust::AnyIdentified, Limits::default());
    let addr = server.local_addr().unwrap();
    let client = common::client(Limits::default());

    let r = client
        .call(
            &common::url(addr, agent),
            &CallBody::new("echo", json!({"x": 1})),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(r.parse_body().unwrap().result, json!({"x": 1}));

    let err = client
        .call(
            &common::url(addr, AgentId::from_bytes([2; 16])),
            &CallBody::new("echo", json!(1)),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    match err {
        CallError::Remote { code, message, .. } => {
            assert_eq!(code, ErrorCode::UNKNOWN_AGENT);
            assert!(message.contains("02020202"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
