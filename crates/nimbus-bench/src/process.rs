//! What a server process costs, read from Linux's `/proc`.
//!
//! CPU: `utime + stime + cutime + cstime` of the server process. For Nimbus that is the whole server;
//! for the reference it is the CGI server plus every `git http-backend`, `git upload-pack`,
//! `git pack-objects`, `git receive-pack` and `git index-pack` it started and waited for. The unit is
//! the kernel's clock tick (`getconf CLK_TCK`, 10 ms on Linux).
//!
//! Peak memory: for Nimbus, exact — the kernel's high-water mark (`VmHWM`), reset before every
//! operation through `/proc/PID/clear_refs`. For the reference, sampled every 2 ms: the sum of the
//! resident memory of the server's descendant processes (the git processes; the CGI server itself is not
//! counted, as a real web server would not be). Sampling can miss a spike shorter than 2 ms, so the
//! reference's figure is, if anything, low. Resident memory includes pages of memory-mapped pack files
//! (page cache the kernel can take back), so the anonymous part (heap) is sampled too, for both.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

/// A system setting from `getconf`, or `default` when it cannot be read.
fn getconf(name: &str, default: u64) -> u64 {
    Command::new("getconf")
        .arg(name)
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(default)
}

/// Kernel clock ticks per second.
pub fn ticks_per_second() -> u64 {
    getconf("CLK_TCK", 100)
}

/// The value of a `Key:   123 kB` line of a `/proc` file such as `status` or `meminfo`, in KiB.
pub fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The fields of `/proc/PID/stat` after the command name (field 3, the state, is index 0).
fn stat_fields(pid: u32) -> Result<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/PID/stat")?;
    Ok(after_name
        .split_whitespace()
        .map(|field| field.parse().unwrap_or(0))
        .collect())
}

/// CPU ticks used by `pid` and its waited-for descendants.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let fields = stat_fields(pid)?;
    // utime, stime, cutime, cstime are fields 14 to 17.
    Ok(fields.get(11..15).map_or(0, |times| times.iter().sum()))
}

/// Waits until `pid` stops using CPU (no new tick for 300 ms, at most 15 s) and returns its ticks then:
/// work a server does in the background after answering (indexing, caches) is charged to the operation
/// that caused it.
pub fn settled_cpu_ticks(pid: u32) -> Result<u64> {
    let mut last = cpu_ticks(pid)?;
    let mut quiet = 0;
    for _ in 0..150 {
        std::thread::sleep(Duration::from_millis(100));
        let now = cpu_ticks(pid)?;
        if now == last {
            quiet += 1;
            if quiet == 3 {
                break;
            }
        } else {
            quiet = 0;
            last = now;
        }
    }
    Ok(last)
}

/// Resets the peak resident memory of `pid` (Linux 4.0 and later).
pub fn reset_peak_rss(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), b"5")
        .with_context(|| format!("resetting the peak RSS of process {pid}"))
}

/// The peak resident memory of `pid` since its start or last reset, in bytes.
pub fn peak_rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = kib_field(&status, "VmHWM").context("no VmHWM in /proc/PID/status")?;
    Ok(kib * 1024)
}

fn page_size() -> u64 {
    getconf("PAGESIZE", 4096)
}

/// Resident and anonymous memory of one process (from `/proc/PID/statm`), in pages.
fn resident_pages(pid: u32) -> Option<(u64, u64)> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let mut fields = statm.split_whitespace().skip(1);
    let resident: u64 = fields.next()?.parse().ok()?;
    let shared: u64 = fields.next()?.parse().ok()?;
    Some((resident, resident.saturating_sub(shared)))
}

/// The resident and anonymous memory of every descendant of `root` (and of `root` itself with
/// `include_root`), in bytes.
fn tree_rss(root: u32, include_root: bool, page: u64) -> (u64, u64) {
    let own = if include_root {
        resident_pages(root).unwrap_or_default()
    } else {
        (0, 0)
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return (own.0 * page, own.1 * page);
    };
    let mut parent_of = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(fields) = stat_fields(pid)
            && let Some(&parent) = fields.get(1)
        {
            parent_of.insert(pid, parent as u32);
        }
    }
    let is_descendant = |mut pid: u32| {
        for _ in 0..64 {
            match parent_of.get(&pid) {
                Some(&parent) if parent == root => return true,
                Some(&parent) if parent > 1 => pid = parent,
                _ => return false,
            }
        }
        false
    };
    let (resident, anonymous) = parent_of
        .keys()
        .filter(|&&pid| is_descendant(pid))
        .filter_map(|&pid| resident_pages(pid))
        .fold(own, |(r, a), (resident, anonymous)| {
            (r + resident, a + anonymous)
        });
    (resident * page, anonymous * page)
}

/// Samples the summed resident and anonymous memory of a process tree until stopped; keeps the
/// maxima.
#[derive(Debug)]
pub struct TreeSampler {
    stop: Arc<AtomicBool>,
    peaks: Arc<(AtomicU64, AtomicU64)>,
    thread: Option<JoinHandle<()>>,
}

impl TreeSampler {
    /// Samples `root`'s descendants, and `root` itself with `include_root`.
    pub fn start(root: u32, include_root: bool) -> TreeSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peaks = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let thread = {
            let (stop, peaks) = (stop.clone(), peaks.clone());
            std::thread::spawn(move || {
                let page = page_size();
                while !stop.load(Ordering::Relaxed) {
                    let (resident, anonymous) = tree_rss(root, include_root, page);
                    peaks.0.fetch_max(resident, Ordering::Relaxed);
                    peaks.1.fetch_max(anonymous, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        TreeSampler {
            stop,
            peaks,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the largest resident and anonymous sums seen, in bytes.
    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        (
            self.peaks.0.load(Ordering::Relaxed),
            self.peaks.1.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_cpu_ticks_and_a_peak() {
        let pid = std::process::id();
        let mut spin = 0u64;
        for i in 0..50_000_000u64 {
            spin = spin.wrapping_add(i ^ (spin >> 3));
        }
        assert_ne!(spin, 1);
        assert!(cpu_ticks(pid).expect("stat") > 0);
        assert!(peak_rss(pid).expect("status") > 1024 * 1024);
    }

    #[test]
    fn the_sampler_sees_a_child_process() {
        let mut child = Command::new("sleep").arg("2").spawn().expect("sleep");
        let sampler = TreeSampler::start(std::process::id(), false);
        std::thread::sleep(Duration::from_millis(200));
        let (resident, anonymous) = sampler.finish();
        let _ = child.kill();
        let _ = child.wait();
        assert!(resident > 0, "a running child has resident memory");
        assert!(anonymous <= resident);
        let own = TreeSampler::start(std::process::id(), true);
        std::thread::sleep(Duration::from_millis(50));
        let (resident, anonymous) = own.finish();
        assert!(anonymous > 0 && anonymous <= resident);
    }
}
