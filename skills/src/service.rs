//! Skills in a node: the verified skills of a folder, run by a supervised
//! actor (`actor.rs`), reached by agents as tools ([`crate::tool`]).
//!
//! [`SkillService::start`] verifies every skill now, as the node starts: a
//! module that does not match its pin is refused, moved to quarantine,
//! logged and counted (`mxp_skills_quarantined_total`); the rest are
//! compiled. The node supervisor then starts the service's actor
//! ([`mxp_actors::NodeService`]), which records each quarantine in the audit
//! log (`skill_quarantine`) before the node serves. When that actor fails,
//! its restart verifies the folder again (and records again).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use futures_util::future::BoxFuture;
use mxp_actors::{NodeService, Services};
use ractor::{Actor, ActorCell, ActorRef, SpawnErr};
use tokio::sync::Semaphore;

use crate::actor::{SkillActor, SkillMsg};
use crate::error::SkillError;
use crate::manifest::Manifest;
use crate::runner::{RunnerConfig, SkillRunner};
use crate::supply::{self, Pins, SkillReport, SkillStatus};

/// Where a node's skills are and how they run (`[skills]` of the node
/// configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkillsSettings {
    /// The skills folder: one `<name>/skill.toml` + `<name>/skill.wasm` each.
    pub dir: PathBuf,
    /// Where tampered modules are moved (same filesystem as `dir`).
    pub quarantine: PathBuf,
    /// The pinned SHA-256 of each skill allowed to load.
    pub pins: Pins,
    /// The runner's pool.
    pub runner: RunnerConfig,
}

/// A quarantine found by a verification, to record in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Quarantined {
    pub(crate) name: String,
    pub(crate) expected: String,
    pub(crate) actual: String,
    pub(crate) quarantined_to: PathBuf,
}

/// One verification of the folder: the runner of the verified skills, and
/// the modules it quarantined.
pub(crate) struct Loaded {
    pub(crate) runner: SkillRunner,
    pub(crate) quarantined: Vec<Quarantined>,
}

/// Verifies every skill of `settings.dir` against the pins (quarantining
/// mismatches), compiles the verified ones, and logs what it found.
pub(crate) fn verify_and_load(settings: &SkillsSettings) -> Result<Loaded, SkillError> {
    let mut runner = SkillRunner::new(settings.runner)?;
    let (verified, mut reports) =
        supply::load_all(&settings.dir, &settings.pins, &settings.quarantine)?;
    for skill in verified {
        let name = skill.manifest().name.clone();
        if let Err(e) = runner.load(skill)
            && let Some(r) = reports.iter_mut().find(|r| r.name == name)
        {
            r.status = SkillStatus::Refused(e);
        }
    }
    let mut quarantined = Vec::new();
    for r in &reports {
        log_report(r);
        if let SkillStatus::Refused(SkillError::HashMismatch {
            name,
            expected,
            actual,
            quarantined_to,
        }) = &r.status
        {
            quarantined.push(Quarantined {
                name: name.clone(),
                expected: expected.clone(),
                actual: actual.clone(),
                quarantined_to: quarantined_to.clone(),
            });
        }
    }
    Ok(Loaded {
        runner,
        quarantined,
    })
}

fn log_report(r: &SkillReport) {
    match &r.status {
        SkillStatus::Verified => tracing::info!(skill = %r.name, "skill verified and loaded"),
        // `supply::load` has logged these already.
        SkillStatus::Refused(SkillError::HashMismatch { .. } | SkillError::Quarantine { .. }) => {}
        SkillStatus::Refused(e) => tracing::warn!(skill = %r.name, "skill refused: {e}"),
        SkillStatus::Missing => tracing::warn!(
            skill = %r.name,
            "skill is pinned in skills.pins but has no folder under skills.dir"
        ),
        _ => {}
    }
}

/// What the actor, the tools and the service share.
pub(crate) struct Shared {
    pub(crate) settings: SkillsSettings,
    /// The runner of the verified skills; empty while the actor (re)starts.
    runner: RwLock<Option<Arc<SkillRunner>>>,
    /// The actor, to tell it an invocation panicked.
    actor: RwLock<Option<ActorRef<SkillMsg>>>,
    /// The first verification, made by [`SkillService::start`], for the
    /// actor's first start.
    first: Mutex<Option<Loaded>>,
    /// One permit per pool slot: an invocation holds one while it runs.
    pub(crate) slots: Arc<Semaphore>,
}

impl Shared {
    pub(crate) fn runner(&self) -> Option<Arc<SkillRunner>> {
        self.runner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_runner(&self, runner: Option<Arc<SkillRunner>>) {
        *self.runner.write().unwrap_or_else(|p| p.into_inner()) = runner;
    }

    pub(crate) fn set_actor(&self, actor: Option<ActorRef<SkillMsg>>) {
        *self.actor.write().unwrap_or_else(|p| p.into_inner()) = actor;
    }

    pub(crate) fn take_first(&self) -> Option<Loaded> {
        self.first.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Tells the actor an invocation panicked: it fails, and its restart
    /// verifies the skills again.
    pub(crate) fn crashed(&self, why: String) {
        let actor = self.actor.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(a) = actor {
            let _ = a.cast(SkillMsg::Crashed(why));
        }
    }

    /// The actor's cell, if it runs.
    fn cell(&self) -> Option<ActorCell> {
        self.actor
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(ActorRef::get_cell)
    }
}

/// A node's skills: verified at start, run by a supervised actor.
/// Cheap to clone (shared).
#[derive(Clone)]
pub struct SkillService {
    shared: Arc<Shared>,
    /// The manifests of the skills verified at start, by name.
    started: Arc<BTreeMap<String, Manifest>>,
}

impl std::fmt::Debug for SkillService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SkillService")
            .field("dir", &self.shared.settings.dir)
            .field("loaded", &self.started.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl SkillService {
    /// Verifies and compiles every skill of `settings.dir` now: tampered
    /// modules are quarantined, logged and counted here, and recorded in
    /// the audit log once the node starts the service's actor.
    ///
    /// # Errors
    /// [`SkillError::Io`] if the folder cannot be listed,
    /// [`SkillError::Engine`] or [`SkillError::MemoryAboveRunner`] if the
    /// runner cannot be set up. A refused skill is not an error: it is
    /// logged, and its tool answers that it is not loaded.
    pub fn start(settings: SkillsSettings) -> Result<SkillService, SkillError> {
        let loaded = verify_and_load(&settings)?;
        let started = loaded
            .runner
            .manifests()
            .map(|m| (m.name.clone(), m.clone()))
            .collect();
        let slots = Arc::new(Semaphore::new(settings.runner.max_instances as usize));
        Ok(SkillService {
            shared: Arc::new(Shared {
                settings,
                runner: RwLock::new(None),
                actor: RwLock::new(None),
                first: Mutex::new(Some(loaded)),
                slots,
            }),
            started: Arc::new(started),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &SkillsSettings {
        &self.shared.settings
    }

    /// The manifest of `name` if it was verified and loaded at start.
    pub fn manifest(&self, name: &str) -> Option<&Manifest> {
        self.started.get(name)
    }

    /// The names of the skills loaded at start, sorted.
    pub fn loaded(&self) -> impl Iterator<Item = &str> {
        self.started.keys().map(String::as_str)
    }

    /// The tool `skill.<name>` with effect class `effect` (see
    /// [`crate::tool::skill_effect`]).
    pub fn tool(&self, name: &str, effect: mxp_actors::EffectClass) -> crate::tool::SkillTool {
        crate::tool::SkillTool::new(name, effect, self.shared.clone())
    }

    /// The runner actor's cell while it runs (to watch or stop it).
    pub fn actor(&self) -> Option<ActorCell> {
        self.shared.cell()
    }

    /// Whether the runner is up with its skills loaded.
    pub fn is_running(&self) -> bool {
        self.shared.runner().is_some()
    }
}

impl NodeService for SkillService {
    fn name(&self) -> &'static str {
        "skill_runner"
    }

    fn spawn(
        &self,
        services: Arc<Services>,
        supervisor: ActorCell,
    ) -> BoxFuture<'_, Result<ActorCell, SpawnErr>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let (actor, _) =
                Actor::spawn_linked(None, SkillActor, (shared, services), supervisor).await?;
            Ok(actor.get_cell())
        })
    }
}
