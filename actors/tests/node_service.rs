//! Node services (node::service): the node supervisor starts them before the
//! agents and restarts them when they fail or are killed, within the
//! supervision policy's restart intensity.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use mxp_actors::audit::{Auditor, record_json};
use mxp_actors::store::{AuditLog, Store};
use mxp_actors::*;
use mxp_transport::{NodeIdentity, PeerTrust};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(10);

/// An actor that reports each start and fails when told to.
struct Probe;

impl Actor for Probe {
    type Msg = ();
    type State = ();
    type Arguments = mpsc::UnboundedSender<ActorCell>;

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        started: mpsc::UnboundedSender<ActorCell>,
    ) -> Result<(), ActorProcessingErr> {
        let _ = started.send(myself.get_cell());
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<()>,
        _msg: (),
        _st: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        Err("told to fail".into())
    }
}

struct ProbeService {
    started: Mutex<mpsc::UnboundedSender<ActorCell>>,
}

impl NodeService for ProbeService {
    fn name(&self) -> &'static str {
        "probe"
    }

    fn spawn(
        &self,
        _services: Arc<Services>,
        supervisor: ActorCell,
    ) -> BoxFuture<'_, Result<ActorCell, SpawnErr>> {
        let tx = self.started.lock().unwrap().clone();
        Box::pin(async move {
            let (a, _) = Actor::spawn_linked(None, Probe, tx, supervisor).await?;
            Ok(a.get_cell())
        })
    }
}

/// The `restarted` flag of every actor_restart record of the probe.
async fn probe_restarts(audit: &Auditor) -> Vec<bool> {
    let (records, _) = audit.read(0, 1000).await.unwrap();
    records
        .iter()
        .map(record_json)
        .filter(|r| r["kind"]["name"] == "actor_restart" && r["data"]["actor"] == "probe")
        .map(|r| r["data"]["restarted"].as_bool().unwrap())
        .collect()
}

async fn next(rx: &mut mpsc::UnboundedReceiver<ActorCell>) -> ActorCell {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("the service did not (re)start in time")
        .expect("the service is gone")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_killed_service_is_restarted_until_the_intensity_limit() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let dir = tempfile::tempdir().unwrap();
    let audit = Auditor::start(AuditLog::open(Store::open(dir.path()).unwrap()).unwrap()).unwrap();
    let mut s = NodeSettings::new(
        "127.0.0.1:0".parse().unwrap(),
        NodeIdentity::generate().unwrap(),
        PeerTrust::AnyIdentified,
        vec![],
    );
    s.audit = audit.clone();
    s.supervision.max_restarts = 2;
    s.supervision.restart_window_ms = 60_000;
    s.node_services = vec![Arc::new(ProbeService {
        started: Mutex::new(tx),
    })];
    let node = Node::start(s).await.unwrap();
    let first = next(&mut rx).await;

    // A failure (the handler returns an error): started again, a new actor.
    first.send_message::<()>(()).unwrap();
    let second = next(&mut rx).await;
    assert_ne!(first.get_id(), second.get_id());

    // Killed: started again.
    second.kill();
    let third = next(&mut rx).await;
    assert_ne!(second.get_id(), third.get_id());

    // Past max_restarts (2) within the window: it stays down, and the node
    // goes on (its control answers). Each restart, and the refusal, is
    // recorded after it was decided.
    third.kill();
    let end = tokio::time::Instant::now() + DEADLINE;
    let restarts = loop {
        let r = probe_restarts(&audit).await;
        if r.len() == 3 {
            break r;
        }
        assert!(tokio::time::Instant::now() < end, "records: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(restarts, vec![true, true, false]);
    assert!(rx.try_recv().is_err(), "restarted past its limit");
    let status = node.control("node.status", serde_json::Value::Null).await;
    assert!(status.is_ok(), "{status:?}");
    node.shutdown(Duration::from_secs(2)).await;
}
