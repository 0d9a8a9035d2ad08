//! What the kernel says about the server processes and the machine: RSS
//! (`/proc/PID/status`), CPU time (`/proc/PID/task/*/schedstat`, else `/proc/PID/stat`),
//! machine CPU (`/proc/stat`) and TCP socket memory (`/proc/net/sockstat`). The parsers are
//! pure functions over the files' text; the figures of several server processes (a cluster's
//! nodes, `--pid a,b,c`) are summed with [`sum_over`].

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `VmRSS` of a `/proc/PID/status` text, in bytes.
pub(crate) fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut it = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = it.next()?.parse().ok()?;
    match it.next() {
        Some("kB") | None => Some(n * 1024),
        Some(_) => None,
    }
}

/// The TCP line of `/proc/net/sockstat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct TcpSockstat {
    /// Sockets in use (`inuse`).
    pub(crate) inuse: u64,
    /// Memory of all TCP sockets, in pages (`mem`).
    pub(crate) mem_pages: u64,
}

/// Reads the `TCP:` line of a `/proc/net/sockstat` text.
pub(crate) fn parse_sockstat_tcp(text: &str) -> Option<TcpSockstat> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let fields: Vec<&str> = line["TCP:".len()..].split_whitespace().collect();
    let get = |name: &str| -> Option<u64> {
        let i = fields.iter().position(|f| *f == name)?;
        fields.get(i + 1)?.parse().ok()
    };
    Some(TcpSockstat {
        inuse: get("inuse")?,
        mem_pages: get("mem")?,
    })
}

/// Counter `name` of group `group` (`TcpExt`, ...) in a `/proc/net/netstat` or
/// `/proc/net/snmp` text: a line of names followed by a line of values, both `group:`.
pub(crate) fn parse_netstat(text: &str, group: &str, name: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut rows = text
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(prefix.as_str()));
    let names = rows.next()?;
    let values = rows.next()?;
    let i = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// The time on CPU of a `schedstat` text (first field), in nanoseconds.
pub(crate) fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// `utime + stime` of a `/proc/PID/stat` text, in clock ticks.
pub(crate) fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    parse_stat_user_kernel_ticks(text).map(|t| t.user + t.kernel)
}

/// User and kernel CPU time (`utime`, `stime`), in clock ticks; summed over processes with
/// [`sum_over`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct UserKernelTicks {
    /// In user space.
    pub(crate) user: u64,
    /// In the kernel.
    pub(crate) kernel: u64,
}

impl std::iter::Sum for UserKernelTicks {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), |a, b| UserKernelTicks {
            user: a.user + b.user,
            kernel: a.kernel + b.kernel,
        })
    }
}

/// `utime` and `stime` of a `/proc/PID/stat` text: user and kernel time of all the process's
/// threads, in clock ticks. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted from the last `)`.
pub(crate) fn parse_stat_user_kernel_ticks(text: &str) -> Option<UserKernelTicks> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    Some(UserKernelTicks {
        user: fields.get(11)?.parse().ok()?,
        kernel: fields.get(12)?.parse().ok()?,
    })
}

/// Machine CPU from the `cpu` line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MachineCpu {
    /// user + nice + system + irq + softirq + steal (guest time is inside user).
    pub(crate) busy: u64,
    /// busy + idle + iowait.
    pub(crate) total: u64,
}

/// Reads the aggregate `cpu` line of a `/proc/stat` text.
pub(crate) fn parse_proc_stat(text: &str) -> Option<MachineCpu> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    if v.len() < 4 {
        return None;
    }
    let (user, nice, system, idle, iowait, irq, softirq, steal) =
        (at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7));
    let busy = user + nice + system + irq + softirq + steal;
    Some(MachineCpu {
        busy,
        total: busy + idle + iowait,
    })
}

/// Runs `getconf NAME` once; `None` if it fails.
fn getconf(name: &str) -> Option<u64> {
    let out = std::process::Command::new("getconf")
        .arg(name)
        .output()
        .ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// Clock ticks per second of `/proc/*/stat` from `getconf CLK_TCK` (run once); `None` if
/// it failed.
pub(crate) fn clk_tck_conf() -> Option<u64> {
    static TCK: OnceLock<Option<u64>> = OnceLock::new();
    *TCK.get_or_init(|| getconf("CLK_TCK").filter(|&t| t > 0))
}

/// Clock ticks per second of `/proc/*/stat` (`getconf CLK_TCK`, 100 if unknown).
pub(crate) fn clk_tck() -> u64 {
    clk_tck_conf().unwrap_or(100)
}

/// The page size for `/proc/net/sockstat` (`getconf PAGESIZE`, 4096 if unknown).
pub(crate) fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| getconf("PAGESIZE").filter(|&p| p > 0).unwrap_or(4096))
}

/// A process to look at: a pid, or this process.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Proc {
    /// Another process.
    Pid(u32),
    /// The load client itself.
    OwnProcess,
}

impl Proc {
    fn dir(self) -> String {
        match self {
            Proc::Pid(p) => format!("/proc/{p}"),
            Proc::OwnProcess => "/proc/self".to_owned(),
        }
    }

    /// Resident set size in bytes.
    pub(crate) fn rss(self) -> Option<u64> {
        parse_vm_rss(&std::fs::read_to_string(format!("{}/status", self.dir())).ok()?)
    }

    /// CPU time used so far, in nanoseconds: the sum of every thread's schedstat, or, where
    /// schedstat is missing, `utime + stime` from stat.
    pub(crate) fn cpu_ns(self) -> Option<u64> {
        let dir = self.dir();
        if let Ok(tasks) = std::fs::read_dir(format!("{dir}/task")) {
            let mut sum = 0u64;
            let mut any = false;
            for t in tasks.flatten() {
                let p = t.path().join("schedstat");
                if let Some(ns) = std::fs::read_to_string(p)
                    .ok()
                    .and_then(|s| parse_schedstat(&s))
                {
                    sum += ns;
                    any = true;
                }
            }
            if any {
                return Some(sum);
            }
        }
        let ticks = parse_stat_cpu_ticks(&std::fs::read_to_string(format!("{dir}/stat")).ok()?)?;
        Some(ticks * 1_000_000_000 / clk_tck())
    }

    /// User and kernel CPU time used so far (`utime`, `stime` of `/proc/PID/stat`), in clock
    /// ticks of [`clk_tck`].
    pub(crate) fn user_kernel_ticks(self) -> Option<UserKernelTicks> {
        parse_stat_user_kernel_ticks(&std::fs::read_to_string(format!("{}/stat", self.dir())).ok()?)
    }

    /// Whether the process exists.
    pub(crate) fn exists(self) -> bool {
        std::path::Path::new(&format!("{}/status", self.dir())).exists()
    }
}

/// `read` of each of the processes `pids`, summed: the figure of a cluster's nodes taken
/// together. `None` without pids, or when one of them cannot be read (it exited, say): a
/// partial sum would pass for the whole.
pub(crate) fn sum_over<T: std::iter::Sum>(
    pids: &[u32],
    read: impl Fn(Proc) -> Option<T>,
) -> Option<T> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| read(Proc::Pid(p))).sum()
}

/// Checks the `--pid` list before a run: each process must exist, with its memory and CPU
/// counters readable, and appear once (else it would count twice). The error names the
/// first pid at fault.
pub(crate) fn check_readable(pids: &[u32]) -> Result<(), String> {
    for (i, &pid) in pids.iter().enumerate() {
        if pids[..i].contains(&pid) {
            return Err(format!(
                "--pid {pid} is given twice: its memory and CPU would count twice"
            ));
        }
        let p = Proc::Pid(pid);
        if p.rss().is_none() || p.cpu_ns().is_none() || p.user_kernel_ticks().is_none() {
            return Err(unreadable(pid));
        }
    }
    Ok(())
}

/// The error for a `--pid` whose counters cannot be read.
fn unreadable(pid: u32) -> String {
    if Proc::Pid(pid).exists() {
        format!("--pid {pid}: cannot read its memory and CPU counters in /proc (has it exited?)")
    } else {
        format!("--pid {pid}: no such process")
    }
}

/// The TCP socket counters of the machine (both ends of loopback connections count).
pub(crate) fn tcp_sockstat() -> Option<TcpSockstat> {
    parse_sockstat_tcp(&std::fs::read_to_string("/proc/net/sockstat").ok()?)
}

/// Connections the kernel dropped because a listener's accept queue was full
/// (`TcpExt: ListenOverflows`, machine-wide); each costs the client a 1 s SYN retransmit.
pub(crate) fn listen_overflows() -> Option<u64> {
    parse_netstat(
        &std::fs::read_to_string("/proc/net/netstat").ok()?,
        "TcpExt",
        "ListenOverflows",
    )
}

/// Machine CPU counters.
pub(crate) fn machine_cpu() -> Option<MachineCpu> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// CPU counters taken together at one moment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSnapshot {
    at: Instant,
    server_ns: Option<u64>,
    server_user_kernel: Option<UserKernelTicks>,
    own_ns: Option<u64>,
    machine: Option<MachineCpu>,
}

impl CpuSnapshot {
    /// Reads the counters of the server processes (`--pid`, summed; none if empty), this
    /// process with its `workers` processes (the client), and the machine.
    pub(crate) fn with_workers(server: &[u32], workers: &[u32]) -> Self {
        let own = Proc::OwnProcess.cpu_ns().map(|own| {
            own + workers
                .iter()
                .filter_map(|&p| Proc::Pid(p).cpu_ns())
                .sum::<u64>()
        });
        CpuSnapshot {
            at: Instant::now(),
            server_ns: sum_over(server, Proc::cpu_ns),
            server_user_kernel: sum_over(server, Proc::user_kernel_ticks),
            own_ns: own,
            machine: machine_cpu(),
        }
    }
}

/// CPU used between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub(crate) struct CpuUsage {
    /// Wall time between the snapshots, seconds.
    pub(crate) window_secs: f64,
    /// Server CPU time, seconds (with --pid): the schedstat of every thread of every --pid
    /// process, summed.
    pub(crate) server_cpu_secs: Option<f64>,
    /// Of which in user space, seconds (`utime` of `/proc/PID/stat`, clock-tick resolution;
    /// summed over the --pid processes).
    pub(crate) server_user_secs: Option<f64>,
    /// Of which in the kernel, seconds (`stime` of `/proc/PID/stat`, clock-tick resolution;
    /// summed over the --pid processes).
    pub(crate) server_kernel_secs: Option<f64>,
    /// Clock ticks per second of `utime`/`stime` (`getconf CLK_TCK`); `None` when getconf
    /// failed and 100 was assumed.
    pub(crate) clock_ticks_per_sec: Option<u64>,
    /// The load client's own CPU time, seconds.
    pub(crate) client_cpu_secs: Option<f64>,
    /// Machine busy time not accounted to the server processes or the client, seconds.
    pub(crate) other_cpu_secs: Option<f64>,
}

impl CpuUsage {
    /// The usage between `a` and `b`.
    pub(crate) fn between(a: &CpuSnapshot, b: &CpuSnapshot) -> Self {
        let secs = |x: Option<u64>, y: Option<u64>| -> Option<f64> {
            Some(y?.saturating_sub(x?) as f64 / 1e9)
        };
        let server = secs(a.server_ns, b.server_ns);
        let ticks = |pick: fn(UserKernelTicks) -> u64| -> Option<f64> {
            let d = pick(b.server_user_kernel?).saturating_sub(pick(a.server_user_kernel?));
            Some(d as f64 / clk_tck() as f64)
        };
        let client = secs(a.own_ns, b.own_ns);
        let machine = match (a.machine, b.machine) {
            (Some(x), Some(y)) => Some(y.busy.saturating_sub(x.busy) as f64 / clk_tck() as f64),
            _ => None,
        };
        CpuUsage {
            window_secs: b.at.saturating_duration_since(a.at).as_secs_f64(),
            server_cpu_secs: server,
            server_user_secs: ticks(|t| t.user),
            server_kernel_secs: ticks(|t| t.kernel),
            clock_ticks_per_sec: clk_tck_conf(),
            client_cpu_secs: client,
            other_cpu_secs: machine
                .map(|m| other_cpu(m, server.unwrap_or(0.0), client.unwrap_or(0.0))),
        }
    }

    /// Average server cores busy during the window (with --pid; all its processes).
    pub(crate) fn server_cores(&self) -> Option<f64> {
        cores(self.server_cpu_secs?, self.window_secs)
    }

    /// Average cores busy in this client during the window.
    pub(crate) fn client_cores(&self) -> Option<f64> {
        cores(self.client_cpu_secs?, self.window_secs)
    }

    /// CPU seconds `secs` (one of the server's figures) spread over `deliveries`, in µs.
    pub(crate) fn us_per_delivery(secs: Option<f64>, deliveries: u64) -> Option<f64> {
        crate::stats::per_item(secs? * 1e6, deliveries)
    }

    /// Average cores used by other processes during the window.
    pub(crate) fn other_cores(&self) -> Option<f64> {
        cores(self.other_cpu_secs?, self.window_secs)
    }

    /// A warning when other processes used more than `limit_cores` on average.
    pub(crate) fn contamination_warning(&self, limit_cores: f64) -> Option<String> {
        let other = self.other_cores()?;
        (other > limit_cores).then(|| {
            format!(
                "other processes used {:.0}% of a core during the measurement (limit {:.0}%): \
                 the figures may be contaminated",
                other * 100.0,
                limit_cores * 100.0
            )
        })
    }
}

/// Machine busy time minus what the server processes (all of them) and the client used (never
/// negative: the counters have tick granularity).
pub(crate) fn other_cpu(machine_busy_secs: f64, server_secs: f64, client_secs: f64) -> f64 {
    (machine_busy_secs - server_secs - client_secs).max(0.0)
}

/// `cpu_secs / window_secs`, the average number of cores busy.
pub(crate) fn cores(cpu_secs: f64, window_secs: f64) -> Option<f64> {
    (window_secs > 0.0).then(|| cpu_secs / window_secs)
}

/// Waits until an RSS figure read by `rss` stops growing (two reads `step` apart within 1%),
/// at most `max`; returns the last read.
pub(crate) async fn settled_rss(
    rss: impl Fn() -> Option<u64>,
    step: Duration,
    max: Duration,
) -> Option<u64> {
    let deadline = Instant::now() + max;
    let mut last = rss()?;
    while Instant::now() < deadline {
        tokio::time::sleep(step).await;
        let now = rss()?;
        if now.abs_diff(last) * 100 <= last {
            return Some(now);
        }
        last = now;
    }
    Some(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\thub-server\nUmask:\t0022\nState:\tS (sleeping)\n\
        VmPeak:\t  123456 kB\nVmSize:\t  123400 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   18432 kB\n\
        RssAnon:\t    9000 kB\nThreads:\t3\n";

    #[test]
    fn vm_rss_in_bytes() {
        assert_eq!(parse_vm_rss(STATUS), Some(18432 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tlots kB\n"), None);
    }

    #[test]
    fn sockstat_tcp_line() {
        let text = "sockets: used 33\nTCP: inuse 13 orphan 0 tw 2 alloc 16 mem 400\n\
                    UDP: inuse 0 mem 0\nUDPLITE: inuse 0\nRAW: inuse 0\nFRAG: inuse 0 memory 0\n";
        assert_eq!(
            parse_sockstat_tcp(text),
            Some(TcpSockstat {
                inuse: 13,
                mem_pages: 400
            })
        );
        assert_eq!(parse_sockstat_tcp("UDP: inuse 0 mem 0\n"), None);
        assert_eq!(parse_sockstat_tcp("TCP: inuse 1 orphan 0\n"), None);
    }

    #[test]
    fn netstat_counters_by_group_and_name() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\n\
                    TcpExt: 0 260 261\n\
                    IpExt: InNoRoutes\nIpExt: 5\n\
                    MPTcpExt: ListenOverflows\nMPTcpExt: 9\n";
        assert_eq!(parse_netstat(text, "TcpExt", "ListenOverflows"), Some(260));
        assert_eq!(parse_netstat(text, "TcpExt", "ListenDrops"), Some(261));
        assert_eq!(parse_netstat(text, "MPTcpExt", "ListenOverflows"), Some(9));
        assert_eq!(parse_netstat(text, "TcpExt", "Nope"), None);
        assert_eq!(parse_netstat(text, "UdpExt", "ListenOverflows"), None);
    }

    #[test]
    fn schedstat_first_field_is_ns_on_cpu() {
        assert_eq!(
            parse_schedstat("1482340287 19916780 103\n"),
            Some(1_482_340_287)
        );
        assert_eq!(parse_schedstat(""), None);
    }

    #[test]
    fn stat_cpu_ticks_count_from_the_last_paren() {
        let text = "29009 (timeout) S 29007 29009 26344 0 -1 4194304 144 0 2 0 7 5 0 0 20 0 1 0 \
                    207499 2998272 388 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(text), Some(12));
        assert_eq!(
            parse_stat_user_kernel_ticks(text),
            Some(UserKernelTicks { user: 7, kernel: 5 })
        );
        // A command name with spaces and a ')' inside.
        let odd = "42 (a b) c) R 1 42 42 0 -1 0 0 0 0 0 100 23 0 0 20 0 4 0 1 2 3";
        assert_eq!(parse_stat_cpu_ticks(odd), Some(123));
        assert_eq!(
            parse_stat_user_kernel_ticks(odd),
            Some(UserKernelTicks {
                user: 100,
                kernel: 23
            })
        );
        assert_eq!(parse_stat_cpu_ticks("42 (x) R 1"), None);
    }

    #[test]
    fn proc_stat_busy_and_total() {
        let text = "cpu  65114 3 14327 329894 2311 1 291 156 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        let m = parse_proc_stat(text).unwrap();
        assert_eq!(m.busy, 65114 + 3 + 14327 + 1 + 291 + 156);
        assert_eq!(m.total, m.busy + 329894 + 2311);
        // Old kernels have fewer columns.
        assert_eq!(
            parse_proc_stat("cpu 1 2 3 4\n"),
            Some(MachineCpu { busy: 6, total: 10 })
        );
        assert_eq!(parse_proc_stat("cpu0 1 2 3 4\n"), None);
    }

    #[test]
    fn other_cpu_is_what_is_left_and_never_negative() {
        assert!((other_cpu(2.0, 1.2, 0.5) - 0.3).abs() < 1e-9);
        assert_eq!(other_cpu(1.0, 0.8, 0.5), 0.0);
        assert_eq!(cores(3.0, 2.0), Some(1.5));
        assert_eq!(cores(3.0, 0.0), None);
    }

    #[test]
    fn figures_of_several_processes_are_summed() {
        let by_pid = |p: Proc| match p {
            Proc::Pid(n) => Some(u64::from(n)),
            Proc::OwnProcess => None,
        };
        assert_eq!(sum_over(&[101, 102, 103], by_pid), Some(306));
        assert_eq!(sum_over(&[7], by_pid), Some(7));
        assert_eq!(sum_over(&[], by_pid), None);
        // One unreadable process spoils the sum rather than leaving it short.
        assert_eq!(
            sum_over(&[101, 102, 103], |p| by_pid(p).filter(|&n| n != 102)),
            None
        );
        let ticks = |p: Proc| {
            by_pid(p).map(|n| UserKernelTicks {
                user: n,
                kernel: 2 * n,
            })
        };
        assert_eq!(
            sum_over(&[1, 2, 3], ticks),
            Some(UserKernelTicks {
                user: 6,
                kernel: 12
            })
        );
        // Real processes: this one and its parent.
        let me = std::process::id();
        let parent = std::os::unix::process::parent_id();
        assert!(sum_over(&[me, parent], Proc::rss).is_some_and(|r| r > 0));
        assert!(sum_over(&[me, parent], Proc::cpu_ns).is_some());
        assert_eq!(sum_over(&[me, u32::MAX], Proc::rss), None);
    }

    #[test]
    fn every_pid_is_checked_and_named_when_at_fault() {
        let me = std::process::id();
        let parent = std::os::unix::process::parent_id();
        assert_eq!(check_readable(&[]), Ok(()));
        assert_eq!(check_readable(&[me]), Ok(()));
        assert_eq!(check_readable(&[me, parent]), Ok(()));
        // pid_max is at most 2^22: this pid never exists.
        assert_eq!(
            check_readable(&[me, u32::MAX]),
            Err(format!("--pid {}: no such process", u32::MAX))
        );
        let e = check_readable(&[me, parent, me]).unwrap_err();
        assert!(e.starts_with(&format!("--pid {me} is given twice")), "{e}");
    }

    #[test]
    fn other_cpu_leaves_out_all_the_server_processes() {
        let at = Instant::now();
        let tck = clk_tck();
        let snapshot = |at, server_ns, own_ns, busy| CpuSnapshot {
            at,
            server_ns: Some(server_ns),
            server_user_kernel: None,
            own_ns: Some(own_ns),
            machine: Some(MachineCpu { busy, total: busy }),
        };
        // Over 2 s, three nodes used 0.5 s each (summed into one figure), the client 0.5 s
        // and the machine 2.5 s: 0.5 s was someone else's.
        let u = CpuUsage::between(
            &snapshot(at, 0, 0, 0),
            &snapshot(
                at + Duration::from_secs(2),
                1_500_000_000,
                500_000_000,
                5 * tck / 2,
            ),
        );
        assert_eq!(u.server_cores(), Some(0.75));
        assert_eq!(u.client_cores(), Some(0.25));
        assert!((u.other_cpu_secs.unwrap() - 0.5).abs() < 1e-9, "{u:?}");
        assert_eq!(u.server_user_secs, None);
    }

    #[test]
    fn contamination_warning_over_the_limit_only() {
        let mut u = CpuUsage {
            window_secs: 10.0,
            server_cpu_secs: Some(5.0),
            server_user_secs: Some(2.0),
            server_kernel_secs: Some(3.0),
            clock_ticks_per_sec: Some(100),
            client_cpu_secs: Some(4.0),
            other_cpu_secs: Some(0.5),
        };
        assert!(u.contamination_warning(0.1).is_none());
        u.other_cpu_secs = Some(2.0);
        let w = u.contamination_warning(0.1).unwrap();
        assert!(w.contains("20%"), "{w}");
    }

    #[test]
    fn own_process_counters_are_readable() {
        assert!(Proc::OwnProcess.rss().is_some_and(|r| r > 0));
        assert!(Proc::OwnProcess.cpu_ns().is_some());
        assert!(Proc::OwnProcess.user_kernel_ticks().is_some());
        assert!(Proc::OwnProcess.exists());
        assert!(machine_cpu().is_some());
        assert!(tcp_sockstat().is_some());
        assert!(listen_overflows().is_some());
    }
}
