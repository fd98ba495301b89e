//! Running the jail: spawn, feed stdin, read capped output, time out.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::time::Instant;

use super::{ExitStatus, JailTools, ShellError, ShellLimits, ShellOutput, command_line};

/// How long the readers wait for the pipes to close after the deadline:
/// killing the jail closes them at once, this only bounds a surprise.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Whether this process runs with effective uid 0, read from
/// `/proc/self/status` (no unsafe `geteuid`).
pub(super) fn euid_is_root() -> Result<bool, ShellError> {
    let unavailable = |what: &str| ShellError::JailUnavailable {
        what: what.to_owned(),
    };
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|_| unavailable("/proc/self/status cannot be read"))?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or_else(|| unavailable("/proc/self/status has no readable Uid: line"))?;
    Ok(euid == 0)
}

/// Runs the whole jail once around `prlimit` itself, to learn at start
/// whether the kernel allows the namespaces for the jail's uid.
pub(super) fn probe(tools: &JailTools, run_as: Option<(u32, u32)>) -> Result<(), ShellError> {
    let prlimit = tools.prlimit.to_string_lossy();
    let line = command_line(tools, &ShellLimits::default(), run_as, &prlimit, &[]);
    let (program, args) = line
        .split_first()
        .ok_or_else(|| ShellError::JailUnavailable {
            what: "empty jail command line".to_owned(),
        })?;
    let out = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| ShellError::JailUnavailable {
            what: format!("cannot start {}: {e}", program.to_string_lossy()),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ShellError::JailUnavailable {
            what: format!(
                "the namespaces are refused (user namespaces disabled?): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// Spawns the jail command line in a fresh empty directory with exactly
/// `env`, and collects its capped output until it exits or the timeout
/// kills it.
pub(super) async fn run(
    line: &[OsString],
    env: &[(&str, &str)],
    stdin: Option<&str>,
    limits: &ShellLimits,
    run_as: Option<(u32, u32)>,
) -> Result<ShellOutput, ShellError> {
    let dir = tempfile::Builder::new()
        .prefix("mxp-shell-")
        .tempdir()
        .map_err(|source| ShellError::Workdir { source })?;
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
            .map_err(|source| ShellError::Workdir { source })?;
    }
    let (program, args) = line.split_first().ok_or_else(|| ShellError::Spawn {
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command line"),
    })?;
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ShellError::Spawn { source })?;
    let child_in = child.stdin.take();
    let child_out = child.stdout.take();
    let child_err = child.stderr.take();
    let drain_until = Instant::now() + limits.timeout + DRAIN_GRACE;

    let feed = async move {
        if let (Some(mut pipe), Some(bytes)) = (child_in, stdin) {
            // A child that exits without reading closes the pipe: not an error of the run.
            let _ = pipe.write_all(bytes.as_bytes()).await;
        }
    };
    let wait = async {
        match tokio::time::timeout(limits.timeout, child.wait()).await {
            Ok(status) => status.map(Some),
            Err(_elapsed) => {
                // Killing unshare kills its pid namespace's init (--kill-child),
                // and with it every process in the namespace.
                child.start_kill()?;
                child.wait().await?;
                Ok(None)
            }
        }
    };
    let (status, (stdout, stdout_truncated), (stderr, stderr_truncated), ()) = tokio::join!(
        wait,
        read_capped(child_out, limits.max_stdout, drain_until),
        read_capped(child_err, limits.max_stderr, drain_until),
        feed,
    );
    let status = match status.map_err(|source| ShellError::Spawn { source })? {
        None => ExitStatus::TimedOut,
        Some(st) => match (st.code(), st.signal()) {
            (Some(code), _) => ExitStatus::Exit { code },
            (None, Some(sig)) => ExitStatus::Signal { sig },
            (None, None) => ExitStatus::Exit { code: -1 },
        },
    };
    drop(dir);
    Ok(ShellOutput {
        status,
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
    })
}

/// Reads a pipe to its end (or until `until`), keeping at most `cap`
/// bytes; the rest is read and discarded so the writer never blocks.
/// Returns the bytes kept and whether any were discarded.
async fn read_capped<R: AsyncRead + Unpin>(
    pipe: Option<R>,
    cap: usize,
    until: Instant,
) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let Some(mut pipe) = pipe else {
        return (kept, truncated);
    };
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = match tokio::time::timeout_at(until, pipe.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => n,
        };
        let keep = n.min(cap.saturating_sub(kept.len()));
        kept.extend_from_slice(chunk.get(..keep).unwrap_or_default());
        if n > keep {
            truncated = true;
        }
    }
    (kept, truncated)
}
