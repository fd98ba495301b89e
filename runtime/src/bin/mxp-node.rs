//! `mxp-node`: runs an MXP node. See `mxp-node --help` and docs/CONFIG.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mxp_runtime::node::http::Readiness;
use mxp_runtime::node::{self, Config, DEFAULT_TOML};

/// Runs an MXP node: agents as supervised actors, MXP over QUIC, Prometheus metrics.
///
/// With no arguments the node runs on embedded defaults: QUIC on 127.0.0.1:9000,
/// metrics on http://127.0.0.1:9464/metrics, data in ./mxp-data, and one demo
/// agent whose id and a ready-to-paste `mxp call` line are printed at start.
///
/// Settings: embedded defaults, then --config FILE, then MXP_<SECTION>__<KEY>
/// environment variables (e.g. MXP_NODE__LISTEN=127.0.0.1:9001). Every setting
/// is listed, with its default, by --print-default-config and in docs/CONFIG.md.
/// An MXP_ variable that is not a setting (e.g. MXP_NODE_LISTEN) is warned
/// about at start, with the right spelling.
/// RUST_LOG sets the log level (default: info).
///
/// SIGINT or SIGTERM stop the node gracefully: agents retire, in-flight Calls
/// drain (node.shutdown_grace_ms), then the node exits 0.
///
/// With metrics on, the same listener answers GET /healthz (200 while the
/// process serves HTTP) and GET /readyz (200 once the node has started, 503
/// while it starts or shuts down).
///
/// The data folder and its identity/ folder are created mode 0700, the key
/// file 0600; a key file group or others may read is refused at start.
///
/// Exit codes: 0 stopped cleanly, 1 failed while running, 2 invalid
/// configuration or arguments, an unusable data folder or identity, or an
/// address (node.listen, metrics.listen) that cannot be bound.
#[derive(Debug, Parser)]
#[command(name = "mxp-node", version, verbatim_doc_comment)]
struct Args {
    /// A TOML configuration file (see --print-default-config).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the default configuration, every setting commented, and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Check the configuration (file and environment) and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_default_config {
        print!("{DEFAULT_TOML}");
        return ExitCode::SUCCESS;
    }
    let text = match &args.config {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(t) => Some((path.display().to_string(), t)),
            Err(e) => {
                eprintln!("mxp-node: cannot read {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    init_tracing();
    let loaded = match Config::load_with_warnings(
        text.as_ref().map(|(p, t)| (p.as_str(), t.as_str())),
        // Names and values that are not UTF-8 cannot be settings: skipped.
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mxp-node: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    for w in &loaded.warnings {
        tracing::warn!("environment variable {w}");
    }
    let config = loaded.config;
    if args.check {
        println!("configuration ok");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mxp-node: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// SIGINT and SIGTERM, caught from the moment it is made: a signal that
/// arrives while the node starts, or right after it printed its lines,
/// still stops it gracefully instead of killing it.
struct Stop {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Stop {
    fn catch() -> Stop {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signals = signal(SignalKind::interrupt())
                .and_then(|int| Ok((int, signal(SignalKind::terminate())?)))
                .map_err(|e| tracing::warn!(error = %e, "cannot catch SIGINT/SIGTERM early"))
                .ok();
            Stop { signals }
        }
        #[cfg(not(unix))]
        {
            Stop {}
        }
    }

    /// Resolves on SIGINT (Ctrl-C) or SIGTERM.
    async fn wait(self) {
        #[cfg(unix)]
        if let Some((mut int, mut term)) = self.signals {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        node::shutdown_signal().await;
    }
}

async fn run(config: Config) -> ExitCode {
    let stop = Stop::catch();
    // Metrics first: what the node finds while it prepares (a skill
    // quarantined at start) is counted.
    let endpoint =
        match node::metrics_addr(&config).and_then(|a| a.map(node::install_metrics).transpose()) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("mxp-node: {e}");
                return ExitCode::from(e.exit_code());
            }
        };
    let prepared = match node::prepare(&config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mxp-node: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let (agents, grace) = (prepared.agents.clone(), prepared.grace);
    let audit_vkey = prepared.audit_vkey.clone();
    let node = match node::start(prepared).await {
        Ok(n) => n,
        Err(e) => {
            let e = e.name_setting();
            eprintln!("mxp-node: cannot start: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    println!("mxp-node listening on {} (QUIC, ALPN mxp/1)", node.url());
    println!("node fingerprint: {}", node.peer_id());
    println!("audit checkpoint key: {audit_vkey}");
    if let Some(m) = &endpoint {
        println!(
            "metrics: http://{}/metrics (health: /healthz, readiness: /readyz)",
            m.addr
        );
    }
    for (id, name) in &agents {
        println!("agent {name}: {id}");
    }
    if let Some((id, _)) = agents.first() {
        println!(
            "try: mxp call {} '{{\"method\":\"echo\",\"params\":{{\"hello\":\"world\"}}}}'",
            node.url().clone().with_agent(*id)
        );
    }
    if let Some(m) = &endpoint {
        m.health.set(Readiness::Ready);
    }
    stop.wait().await;
    if let Some(m) = &endpoint {
        m.health.set(Readiness::Stopping);
    }
    println!("shutting down: retiring agents (grace {grace:?})");
    let left = node.shutdown(grace).await;
    if left > 0 {
        eprintln!("mxp-node: {left} agent(s) had not drained within the grace period");
    }
    println!("stopped");
    ExitCode::SUCCESS
}
