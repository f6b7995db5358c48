//! The bench's traffic in the lab of `tests/fixtures/lab.yaml`: wrk (closed loop), the
//! open-loop client, iperf3, all from pod `client-a` to nginx (and iperf3's server) in pod
//! `web`, or to P1's proxy in front of nginx; nginx's served-request counter read from the
//! unmonitored host `ext`; and the
//! detection probe (`tests/clients/lookups.py` from `client-b`), each lookup of which the bench
//! policy makes an immediate violation.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt as _;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::OpenLoopReport;
use super::cpu::{cpu_set, read_pid_file, set_thread_affinity};
use crate::lab::Lab;
use crate::util;

/// The pod that drives the load.
pub(super) const CLIENT: &str = "client-a";
/// The pod whose lookups are the detection-latency probe.
pub(super) const PROBE: &str = "client-b";
/// The server pod (nginx on :80).
pub(super) const SERVER: &str = "web";
/// The external host that reads nginx's counters (not monitored).
pub(super) const OUTSIDE: &str = "ext";
/// nginx route used by the load (100-byte body).
pub(super) const ROUTE: &str = "/small";
/// iperf3 port in the server pod.
pub(super) const IPERF_PORT: u16 = 5201;
/// What the bench policy makes of the probe's lookups: each one an immediate violation.
pub(super) const LOOKUP: &str = "/internal/lookup";
/// The full agent's policy: `/internal/` is protected and nothing under it is documented, so
/// every lookup there is an `undocumented-endpoint` violation; the load's `/small` is outside
/// it and goes through the whole policy evaluation without a finding.
pub(super) const POLICY: &str = "version: 1\nprotected_prefixes: [/internal/]\n";

/// The lab's traffic tools, aimed at the server pod.
#[derive(Clone, Copy)]
pub(super) struct Traffic<'a> {
    /// The lab.
    pub(super) lab: &'a Lab,
    /// The server pod's address.
    pub(super) server_ip: IpAddr,
    /// The port of the load (wrk and the open-loop client): nginx's 80, or P1's proxy.
    pub(super) port: u16,
}

impl Traffic<'_> {
    /// `http://SERVER:port{path}`.
    fn url(&self, port: u16, path: &str) -> String {
        format!("http://{}{path}", SocketAddr::new(self.server_ip, port))
    }

    /// wrk from the client pod for `d`: (requests/s, requests).
    pub(super) fn wrk(&self, d: Duration) -> Result<(f64, u64)> {
        let mut cmd = self.lab.command(CLIENT, "wrk")?;
        cmd.args(["-t1", "-c16", &format!("-d{}s", d.as_secs().max(1))])
            .arg(self.url(self.port, ROUTE));
        let out = util::output(&mut cmd)?;
        parse_wrk(&out).with_context(|| format!("unexpected wrk output:\n{out}"))
    }

    /// nginx's served-request counter, read from the unmonitored external host.
    pub(super) fn served(&self) -> Result<u64> {
        let mut cmd = self.lab.command(OUTSIDE, "curl")?;
        cmd.args(["-sS", "--max-time", "5"])
            .arg(self.url(80, "/nginx_status"));
        let status = util::output(&mut cmd)?;
        status
            .lines()
            .nth(2)
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("unexpected stub_status output: {status}"))
    }

    /// The open-loop client ([`super::client`], this binary's `bench-client`) from the client
    /// pod at `rate` requests/s over `conns` connections for `d`; with `cpus`, pinned to them
    /// from before its exec.
    pub(super) fn open_loop(
        &self,
        rate: u32,
        d: Duration,
        conns: usize,
        cpus: Option<&[usize]>,
    ) -> Result<OpenLoopReport> {
        // This very binary, through /proc: a rebuild of xtask during the bench replaces the
        // file (`current_exe` then names a deleted path), not the inode we run from.
        let exe = format!("/proc/{}/exe", std::process::id());
        let mut cmd = self.lab.command(CLIENT, &exe)?;
        if let Some(cpus) = cpus {
            let set = cpu_set(cpus);
            // SAFETY: the hook runs in the forked child before exec and makes one system
            // call (sched_setaffinity), allocating nothing.
            unsafe {
                cmd.pre_exec(move || set_thread_affinity(0, &set));
            }
        }
        cmd.args([
            "bench-client",
            "--addr",
            &SocketAddr::new(self.server_ip, self.port).to_string(),
            "--path",
            ROUTE,
            "--rate",
            &rate.to_string(),
            "--secs",
            &d.as_secs_f64().to_string(),
            "--conns",
            &conns.to_string(),
        ]);
        let out = util::output(&mut cmd)?;
        serde_json::from_str(out.trim())
            .with_context(|| format!("unexpected open-loop client output:\n{out}"))
    }

    /// iperf3 from the client pod for `d`: received Gbit/s.
    pub(super) fn iperf(&self, d: Duration) -> Result<f64> {
        let mut cmd = self.lab.command(CLIENT, "iperf3")?;
        cmd.args([
            "-c",
            &self.server_ip.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
            "-t",
            &d.as_secs().max(1).to_string(),
            "-J",
        ]);
        let out = util::output(&mut cmd)?;
        let v: Value = serde_json::from_str(&out)
            .with_context(|| format!("unexpected iperf3 output:\n{out:.2000}"))?;
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .map(|b| b / 1e9)
            .with_context(|| format!("no end.sum_received in iperf3's output:\n{out:.2000}"))
    }

    /// Runs `count` lookups of [`LOOKUP`]`/<i>` from the probe pod; returns each one's route
    /// and the `CLOCK_MONOTONIC` time its request was written.
    pub(super) fn lookups(&self, count: u32) -> Result<HashMap<String, f64>> {
        // Each lookup is a new route under the protected prefix, so each is written at once
        // (never aggregated).
        let lookups = crate::repo_root().join("tests/clients/lookups.py");
        let mut cmd = self.lab.command(PROBE, "python3")?;
        cmd.arg(&lookups).args([
            &self.server_ip.to_string(),
            "80",
            LOOKUP,
            &count.to_string(),
            "10",
            "20",
        ]);
        let out = util::output(&mut cmd)?;
        let mut sent = HashMap::new();
        for line in out.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [i, t, _status] = f[..] {
                sent.insert(format!("{LOOKUP}/{i}"), t.parse::<f64>()?);
            }
        }
        Ok(sent)
    }
}

/// nginx's PID in the server pod (its pid file: nginx runs as one process, no master).
pub(super) fn nginx_pid(lab: &Lab) -> Result<u32> {
    read_pid_file(&lab.run_dir().join(SERVER).join("nginx-80/nginx.pid"))
}

/// `(requests/s, requests)` from wrk's output.
fn parse_wrk(out: &str) -> Option<(f64, u64)> {
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let requests = out
        .lines()
        .find(|l| l.contains(" requests in "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((rps, requests))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output() {
        let out = "Running 5s test @ http://10.77.0.10/small\n  1 threads and 16 connections\n  \
                   Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   400.00us  \
                   100.00us   2.00ms   90.00%\n  180000 requests in 5.00s, 60.00MB read\n\
                   Requests/sec:  36000.12\nTransfer/sec:     12.00MB\n";
        assert_eq!(parse_wrk(out), Some((36000.12, 180_000)));
    }
}
