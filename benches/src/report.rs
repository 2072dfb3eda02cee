//! Figures: the `--json` report, percentiles, and per-process CPU and RSS
//! read from `/proc`.

use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) static REPORT: std::sync::Mutex<Vec<(String, serde_json::Value)>> = std::sync::Mutex::new(Vec::new());

pub(crate) fn record(key: &str, value: serde_json::Value) {
    REPORT.lock().unwrap_or_else(|e| e.into_inner()).push((key.to_owned(), value));
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// CPU seconds (user + system) a process has used.
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Resident set size of a process, KiB.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

pub(crate) fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[((v.len() - 1) as f64 * q).round() as usize] }
}

pub(crate) fn field(line: &str, name: &str) -> Option<u64> {
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == name {
            return it.next()?.parse().ok();
        }
    }
    None
}

/// CPU time of a process with nanosecond resolution (`/proc/PID/stat` counts
/// 10 ms ticks, too coarse for a few milliseconds per update): a thread
/// samples every thread's `schedstat` run time every 20 ms and keeps the last
/// value of threads that have exited, so their time still counts.
pub(crate) struct CpuMeter {
    total_ns: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CpuMeter {
    pub(crate) fn start(pid: u32) -> CpuMeter {
        use std::sync::atomic::Ordering;
        let total_ns = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (t, s) = (total_ns.clone(), stop.clone());
        let sample = move |seen: &mut std::collections::HashMap<String, u64>| {
            if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
                for task in dir.flatten() {
                    let ns = std::fs::read_to_string(task.path().join("schedstat"))
                        .ok()
                        .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok());
                    if let Some(ns) = ns {
                        let e = seen.entry(task.file_name().to_string_lossy().into_owned()).or_default();
                        *e = (*e).max(ns);
                    }
                }
            }
            t.store(seen.values().sum(), Ordering::Release);
        };
        let mut seen = std::collections::HashMap::new();
        sample(&mut seen);
        std::thread::spawn(move || {
            while !s.load(Ordering::Acquire) {
                std::thread::sleep(std::time::Duration::from_millis(20));
                sample(&mut seen);
            }
        });
        CpuMeter { total_ns, stop }
    }

    /// CPU seconds the process has used since the meter started watching it
    /// (plus what its live threads had used before).
    pub(crate) fn secs(&self) -> f64 {
        // One more sample period so the latest work is counted.
        std::thread::sleep(std::time::Duration::from_millis(40));
        self.total_ns.load(std::sync::atomic::Ordering::Acquire) as f64 / 1e9
    }
}

impl Drop for CpuMeter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
    }
}
