//! The standard process metrics (`process_resident_memory_bytes`, `process_cpu_seconds_total`, open file
//! descriptors, start time), read from `/proc/self` at scrape time.
//!
//! The prometheus crate's `process` feature has a collector too, but it counts CPU time in whole seconds
//! (an integer counter) and pulls in procfs with a second version of rustix; these few files are read
//! here instead.

use std::sync::Mutex;

use prometheus::{Counter, Gauge, IntGauge, Opts, Registry};

/// Clock ticks per second in `/proc/<pid>/stat`: the kernel's USER_HZ, fixed at 100 for user space.
const USER_HZ: f64 = 100.0;

/// The process metrics, refreshed on each scrape.
pub struct ProcessMetrics {
    cpu: Counter,
    resident: IntGauge,
    virtual_memory: IntGauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    threads: IntGauge,
    /// Two scrapes at once must not both add the same CPU time to the counter.
    refreshing: Mutex<()>,
}

impl ProcessMetrics {
    /// Registers the process metrics in `registry`; None where there is no `/proc/self` (not Linux).
    pub fn register(registry: &Registry) -> Option<ProcessMetrics> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| boot_time(&s));
        let start_time = Gauge::with_opts(Opts::new(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
        ))
        .expect("valid metric");
        if let (Some(boot), Some(stat)) = (boot, parse_stat(&stat)) {
            start_time.set(boot as f64 + stat.start_ticks as f64 / USER_HZ);
        }
        let gauge = |name: &str, help: &str| {
            IntGauge::with_opts(Opts::new(name, help)).expect("valid metric")
        };
        let metrics = ProcessMetrics {
            cpu: Counter::with_opts(Opts::new(
                "process_cpu_seconds_total",
                "User and system CPU time spent, in seconds",
            ))
            .expect("valid metric"),
            resident: gauge("process_resident_memory_bytes", "Resident memory, in bytes"),
            virtual_memory: gauge("process_virtual_memory_bytes", "Virtual memory, in bytes"),
            open_fds: gauge("process_open_fds", "Open file descriptors"),
            max_fds: gauge("process_max_fds", "Maximum number of open file descriptors"),
            threads: gauge("process_threads", "OS threads in the process"),
            refreshing: Mutex::new(()),
        };
        for m in [
            &metrics.resident,
            &metrics.virtual_memory,
            &metrics.open_fds,
            &metrics.max_fds,
            &metrics.threads,
        ] {
            registry
                .register(Box::new(m.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(metrics.cpu.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(start_time))
            .expect("unique metric");
        Some(metrics)
    }

    /// Reads `/proc/self` again; what cannot be read keeps its last value.
    pub fn refresh(&self) {
        let _one_at_a_time = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stat) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| parse_stat(&s))
        {
            let cpu = (stat.utime + stat.stime) as f64 / USER_HZ;
            let more = cpu - self.cpu.get();
            if more > 0.0 {
                self.cpu.inc_by(more);
            }
            self.threads.set(stat.threads);
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            if let Some(kib) = status_kib(&status, "VmRSS:") {
                self.resident.set(kib * 1024);
            }
            if let Some(kib) = status_kib(&status, "VmSize:") {
                self.virtual_memory.set(kib * 1024);
            }
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(fds.count() as i64);
        }
        if let Some(max) = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| max_open_files(&s))
        {
            self.max_fds.set(max);
        }
    }
}

/// The fields of `/proc/<pid>/stat` used here.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    threads: i64,
    start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may hold spaces and
/// parentheses itself, so the fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let after = &text[text.rfind(')')? + 1..];
    // Fields from 3 (state) on: utime is field 14, stime 15, num_threads 20, starttime 22.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse().ok());
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        threads: field(20)? as i64,
        start_ticks: field(22)?,
    })
}

/// A `kB` value of `/proc/<pid>/status` (`VmRSS:`).
fn status_kib(text: &str, name: &str) -> Option<i64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// The soft limit of open files in `/proc/<pid>/limits`; None when unlimited.
fn max_open_files(text: &str) -> Option<i64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The boot time (`btime`, seconds since the epoch) in `/proc/stat`.
fn boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis in it, as a process may name itself.
        let text = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1207 0 0 0 \
                    250 75 0 0 20 0 5 0 123456 26112000 4321 18446744073709551615";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                utime: 250,
                stime: 75,
                threads: 5,
                start_ticks: 123456,
            })
        );
        assert_eq!(parse_stat("12 (short) S 1"), None);
    }

    #[test]
    fn status_limits_and_boot_time() {
        let status = "Name:\thashroll\nVmSize:\t  123456 kB\nVmRSS:\t   17640 kB\nThreads:\t5\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(17640));
        assert_eq!(status_kib(status, "VmSize:"), Some(123456));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(max_open_files(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(max_open_files(unlimited), None);
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn this_process_is_measured() {
        let registry = Registry::new();
        let p = ProcessMetrics::register(&registry).expect("Linux has /proc/self");
        p.refresh();
        assert!(p.resident.get() > 0);
        assert!(p.open_fds.get() > 0);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
            "process_open_fds",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
    }
}
