//! The open-loop HTTP load generator of `cargo xtask bench` (the hidden `cargo xtask
//! bench-client`, run inside a lab pod).
//!
//! wrk is closed-loop: when a response is slow, wrk sends its next request later, so the slow
//! period produces fewer samples and the latency distribution looks better than it is
//! (coordinated omission). Here request *i* is scheduled at `start + i / rate`, whatever
//! happened before, and its latency is measured from that scheduled time: a response that
//! holds up its connection makes the requests queued behind it late, and that lateness is
//! counted. Requests are spread round-robin over `conns` keep-alive connections, one thread
//! each (blocking I/O, timer slack set to 1 µs so the sleeps are precise).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

/// What the open-loop client measured (printed as one JSON line).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenLoopReport {
    /// Requested rate, requests/s.
    pub rate: f64,
    /// Requests scheduled.
    pub scheduled: u64,
    /// Requests answered with a complete response.
    pub ok: u64,
    /// Requests that failed (connection error, bad response).
    pub errors: u64,
    /// Latency from the scheduled send time to the end of the response, µs: median.
    pub p50_us: f64,
    /// 90th percentile, µs.
    pub p90_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// Maximum, µs.
    pub max_us: f64,
    /// Requests whose send started more than 1 ms after their scheduled time (the client or
    /// its connection could not keep up; their latency includes the wait).
    pub late: u64,
    /// Answered requests per second over the run.
    pub achieved_rps: f64,
}

/// Runs `rate` requests/s of `GET path` against `addr` for `duration` over `conns`
/// connections.
pub fn run(
    addr: SocketAddr,
    path: &str,
    rate: f64,
    duration: Duration,
    conns: usize,
) -> Result<OpenLoopReport> {
    if rate.is_nan() || rate <= 0.0 || conns == 0 {
        bail!("rate and connections must be positive");
    }
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: xtask-bench-open-loop\r\n\r\n",
        addr.ip()
    );
    let barrier = Arc::new(Barrier::new(conns + 1));
    let start_cell = Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut threads = Vec::new();
    for k in 0..conns {
        let (barrier, start_cell, request) = (barrier.clone(), start_cell.clone(), request.clone());
        threads.push(std::thread::spawn(
            move || -> Result<(Vec<f64>, u64, u64)> {
                set_timer_slack();
                let mut conn = Conn::connect(addr);
                barrier.wait();
                let start = *start_cell.get().context("start time")?;
                let (mut lat, mut errors, mut late) = (Vec::new(), 0u64, 0u64);
                let mut i = k as u64;
                while i < total {
                    let sched = start + interval.mul_f64(i as f64);
                    let now = Instant::now();
                    if now < sched {
                        std::thread::sleep(sched - now);
                    } else if now - sched > Duration::from_millis(1) {
                        late += 1;
                    }
                    let ok = match &mut conn {
                        Ok(c) => c.exchange(request.as_bytes()).is_ok(),
                        Err(_) => false,
                    };
                    if ok {
                        lat.push(sched.elapsed().as_secs_f64() * 1e6);
                    } else {
                        errors += 1;
                        conn = Conn::connect(addr);
                    }
                    i += conns as u64;
                }
                Ok((lat, errors, late))
            },
        ));
    }
    // Let every thread connect first; start 20 ms later.
    let _ = start_cell.set(Instant::now() + Duration::from_millis(20));
    barrier.wait();
    let begun = *start_cell.get().context("start time")?;
    let mut all = Vec::with_capacity(total as usize);
    let (mut errors, mut late) = (0, 0);
    for t in threads {
        let (lat, e, l) = t
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        all.extend(lat);
        errors += e;
        late += l;
    }
    let wall = begun.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let q = |p: f64| quantile(&all, p);
    Ok(OpenLoopReport {
        rate,
        scheduled: total,
        ok: all.len() as u64,
        errors,
        p50_us: q(0.50),
        p90_us: q(0.90),
        p99_us: q(0.99),
        max_us: all.last().copied().unwrap_or(0.0),
        late,
        achieved_rps: all.len() as f64 / wall.max(1e-9),
    })
}

/// The `q` quantile (nearest rank) of sorted values; 0 when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn set_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and affects only this thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
}

/// One keep-alive connection.
struct Conn {
    reader: BufReader<TcpStream>,
    line: String,
    body: Vec<u8>,
}

impl Conn {
    fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Self {
            reader: BufReader::with_capacity(64 * 1024, s),
            line: String::new(),
            body: Vec::new(),
        })
    }

    /// Writes the request and reads one whole response (head, then a Content-Length body).
    fn exchange(&mut self, request: &[u8]) -> std::io::Result<()> {
        self.reader.get_mut().write_all(request)?;
        let mut length = None;
        let mut first = true;
        loop {
            self.line.clear();
            if self.reader.read_line(&mut self.line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let l = self.line.trim_end();
            if first {
                if !l.starts_with("HTTP/1.") {
                    return Err(std::io::Error::other(format!("bad status line {l:?}")));
                }
                first = false;
                continue;
            }
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse::<usize>().ok();
            }
        }
        let n = length.ok_or_else(|| std::io::Error::other("response without Content-Length"))?;
        self.body.resize(n, 0);
        self.reader.read_exact(&mut self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
