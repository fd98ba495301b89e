//! The standard Prometheus process metrics (`process_*`), read from
//! `/proc/self` on Linux at every scrape. Best effort: a value that cannot be
//! read is left out; off Linux only the start time is given.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Clock ticks a second in `/proc` (`USER_HZ`, fixed at 100 by the Linux ABI
/// on every architecture Rust supports there).
#[cfg(target_os = "linux")]
const USER_HZ: f64 = 100.0;

/// What one scrape found.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) cpu_seconds: Option<f64>,
    pub(crate) resident_bytes: Option<f64>,
    pub(crate) virtual_bytes: Option<f64>,
    pub(crate) open_fds: Option<f64>,
    pub(crate) max_fds: Option<f64>,
    pub(crate) threads: Option<f64>,
    pub(crate) start_time_seconds: Option<f64>,
}

/// The fields of `/proc/<pid>/stat` after the command name, which may hold
/// spaces and parentheses: from the state (field 3) on.
#[cfg(any(target_os = "linux", test))]
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

#[cfg(any(target_os = "linux", test))]
fn field(fields: &[&str], n: usize) -> Option<f64> {
    // Field numbers as in proc(5); the slice starts at field 3.
    fields.get(n.checked_sub(3)?)?.parse().ok()
}

/// `Name:   value unit` from `/proc/self/status`, in bytes when the unit is kB.
#[cfg(any(target_os = "linux", test))]
fn status_kb(status: &str, name: &str) -> Option<f64> {
    let line = status.lines().find_map(|l| l.strip_prefix(name))?;
    let kb: f64 = line
        .strip_prefix(':')?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024.0)
}

/// `btime <seconds>` from `/proc/stat`.
#[cfg(any(target_os = "linux", test))]
fn boot_time(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
#[cfg(any(target_os = "linux", test))]
fn max_open_files(limits: &str) -> Option<f64> {
    let rest = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    match rest.split_whitespace().next()? {
        "unlimited" => None,
        n => n.parse().ok(),
    }
}

/// Reads this process's numbers; `started` is used when the system does
/// not say when the process started.
pub(crate) fn sample(started: SystemTime) -> Sample {
    let fallback_start = started
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs_f64());
    #[cfg(target_os = "linux")]
    {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let stat = read("/proc/self/stat").unwrap_or_default();
        let fields = stat_fields(&stat);
        let status = read("/proc/self/status").unwrap_or_default();
        let cpu = field(&fields, 14)
            .zip(field(&fields, 15))
            .map(|(u, s)| (u + s) / USER_HZ);
        let start = field(&fields, 22)
            .zip(read("/proc/stat").as_deref().and_then(boot_time))
            .map(|(ticks, boot)| boot + ticks / USER_HZ);
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            // The listing holds one descriptor of its own.
            .map(|d| d.count().saturating_sub(1) as f64);
        Sample {
            cpu_seconds: cpu,
            resident_bytes: status_kb(&status, "VmRSS"),
            virtual_bytes: field(&fields, 23),
            open_fds,
            max_fds: read("/proc/self/limits")
                .as_deref()
                .and_then(max_open_files),
            threads: field(&fields, 20),
            start_time_seconds: start.or(fallback_start),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        Sample {
            start_time_seconds: fallback_start,
            ..Sample::default()
        }
    }
}

/// The sample as Prometheus text.
pub(crate) fn render(s: &Sample) -> String {
    let mut out = String::new();
    let mut one = |name: &str, kind: &str, help: &str, v: Option<f64>| {
        if let Some(v) = v {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n\n"
            );
        }
    };
    one(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        s.cpu_seconds,
    );
    one(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        s.resident_bytes,
    );
    one(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        s.virtual_bytes,
    );
    one(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        s.open_fds,
    );
    one(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        s.max_fds,
    );
    one(
        "process_threads",
        "gauge",
        "Number of OS threads in the process.",
        s.threads,
    );
    one(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        s.start_time_seconds,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_texts_parse() {
        // A command name with a space and a parenthesis.
        let stat = "4242 (mxp node) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 7 0 12345 104857600 2560 18446744073709551615";
        let f = stat_fields(stat);
        assert_eq!(field(&f, 3), None, "state is not a number");
        assert_eq!(field(&f, 14), Some(250.0));
        assert_eq!(field(&f, 15), Some(50.0));
        assert_eq!(field(&f, 20), Some(7.0));
        assert_eq!(field(&f, 22), Some(12345.0));
        assert_eq!(field(&f, 23), Some(104_857_600.0));
        assert_eq!(field(&f, 2), None);
        assert_eq!(field(&f, 99), None);
        assert!(stat_fields("garbage").is_empty());
        assert_eq!(
            status_kb("Name:\tx\nVmRSS:\t   2048 kB\n", "VmRSS"),
            Some(2048.0 * 1024.0)
        );
        assert_eq!(status_kb("VmRSSX: 1 kB\n", "VmRSS"), None);
        assert_eq!(boot_time("cpu 1 2\nbtime 1700000000\n"), Some(1.7e9));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024.0));
        assert_eq!(
            max_open_files("Max open files unlimited unlimited files"),
            None
        );
    }

    #[test]
    fn this_process_has_numbers() {
        let s = sample(SystemTime::now());
        let start = s.start_time_seconds.unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start}"
        );
        #[cfg(target_os = "linux")]
        {
            assert!(s.resident_bytes.unwrap() > 0.0);
            assert!(s.open_fds.unwrap() >= 1.0);
            assert!(s.cpu_seconds.unwrap() >= 0.0);
            assert!(s.threads.unwrap() >= 1.0);
        }
        let text = render(&s);
        assert!(
            text.contains("# TYPE process_start_time_seconds gauge\n"),
            "{text}"
        );
        let none = render(&Sample::default());
        assert!(none.is_empty(), "{none}");
    }
}
