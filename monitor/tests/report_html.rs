//! `monitor report --html` end to end: a capture analysed into a store, a real collector
//! serving it, the CLI fetching the report over gRPC and writing the page, and headless
//! Chromium loading it: no console errors (checked against a control page that has one, so
//! the check itself is known to work), the exact number of bars per chart for the Vantage
//! incident, a non-blank screenshot, and markup from records shown as text, never run.
//!
//! Needs Debian's `chromium` (`apt-get install -y chromium`; `cargo xtask setup` installs
//! it): the tests fail, loudly, without it.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    time::{Duration, Instant},
};

use support::{
    Capture, DAY0, LOOKUP, MONITOR, NS, PROFILE, analyze_into, incident, ip, request, response,
};

const CHROMIUM: &str = "/usr/bin/chromium";
const SINCE: &str = "2026-11-01T00:00:00Z";

fn chromium() -> &'static str {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`; \
         `cargo xtask setup` does it). These tests check the page in a real browser and do not \
         skip."
    );
    CHROMIUM
}

/// Headless Chromium on `page` with `args` (`--dump-dom`, `--screenshot=...`), its console
/// logged to stderr.
fn browse(page: &Path, args: &[&str]) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The console messages (and page errors) Chromium logged.
fn console(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught") || l.contains("Refused to"))
        .map(str::to_owned)
        .collect()
}

/// A collector serving `store`, stopped when dropped.
struct Collector {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collector(store: &Path) -> Collector {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(MONITOR)
        .args([
            "collector",
            "--insecure",
            "--listen",
            &listen,
            "--retention-days",
            "0",
        ])
        .arg("--store")
        .arg(store)
        .arg("--ready-file")
        .arg(&ready)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start the collector");
    let c = Collector {
        child,
        url: format!("http://{listen}"),
        _dir: dir,
    };
    let start = Instant::now();
    while !ready.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the collector did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    c
}

/// `monitor report --html` for `path` against `c`; returns the page's path.
fn report_page(c: &Collector, path: &str, dir: &Path) -> PathBuf {
    let page = dir.join("report.html");
    let out = Command::new(MONITOR)
        .args([
            "report",
            "--insecure",
            "--collector",
            &c.url,
            "--path",
            path,
        ])
        .args(["--since", SINCE, "--html"])
        .arg(&page)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "monitor report: {stderr}");
    assert!(stderr.contains("page written to"), "{stderr}");
    assert!(out.stdout.is_empty(), "only the page without --output");
    page
}

/// The `<svg>` of chart `name` in the DOM.
fn chart<'a>(dom: &'a str, name: &str) -> &'a str {
    let at = dom
        .find(&format!("data-chart=\"{name}\""))
        .unwrap_or_else(|| panic!("no chart {name} in the page"));
    let end = dom[at..].find("</svg>").unwrap();
    &dom[at..at + end]
}

fn bars(svg: &str) -> usize {
    svg.matches("<rect class=\"bar").count()
}

#[test]
fn the_incident_report_page_loads_cleanly_with_the_expected_bars() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, store) = (
        dir.path().join("incident.pcap"),
        dir.path().join("store.db"),
    );
    incident().write(&pcap);
    analyze_into(&pcap, &store);
    let c = collector(&store);
    let page = report_page(&c, LOOKUP, dir.path());

    // The console check works: a control page with an error is caught.
    let control = dir.path().join("control.html");
    std::fs::write(
        &control,
        "<html><body><script>console.error('control-error')</script></body></html>",
    )
    .unwrap();
    let logged = console(&browse(&control, &["--dump-dom"]).stderr);
    assert!(
        logged.iter().any(|l| l.contains("control-error")),
        "chromium did not log the control page's console error: {logged:?}"
    );

    let out = browse(&page, &["--dump-dom"]);
    assert_eq!(
        console(&out.stderr),
        Vec::<String>::new(),
        "console messages"
    );
    let dom = String::from_utf8(out.stdout).unwrap();
    assert!(
        dom.contains(&format!("<h1>Report: path {LOOKUP}</h1>")),
        "{dom}"
    );
    assert!(
        dom.contains("3 requests matched, first 2026-11-02T14:00:00Z"),
        "{dom}"
    );
    assert!(!dom.contains("<script"), "no script at all");
    // One lookup a day for three days, at 14:00, from one pod, all 200, one state each day.
    for (name, n) in [
        ("by-day", 3),
        ("hours-of-day", 1),
        ("by-source", 1),
        ("by-status", 1),
        ("by-destination", 1),
        ("filter:state", 3),
        ("filter:fields", 1),
        ("filter:limit", 1),
        // The subject and the preferences route of the same service.
        ("response-bytes", 2),
        // undocumented-endpoint, sensitive-fields, response-size-anomaly, new-edge.
        ("by-rule", 4),
    ] {
        assert_eq!(bars(chart(&dom, name)), n, "{name}: {}", chart(&dom, name));
    }
    let states = chart(&dom, "filter:state");
    for s in ["CA", "NY", "TX"] {
        assert!(states.contains(&format!(">{s}<title>")), "{states}");
    }
    let days = chart(&dom, "by-day");
    for d in ["2026-11-02: 1", "2026-11-03: 1", "2026-11-04: 1"] {
        assert!(days.contains(d), "{days}");
    }
    let graph = chart(&dom, "graph");
    assert_eq!(graph.matches("<g class=\"node source\"").count(), 1);
    assert_eq!(graph.matches("<g class=\"node destination\"").count(), 1);
    assert!(
        graph.contains("vantage/svc-recommendation-engine-04"),
        "{graph}"
    );

    // A screenshot, and it is not blank: bars in the page's bar colour, text.
    let shot = dir.path().join("report.png");
    let out = browse(
        &page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,2000",
        ],
    );
    assert_eq!(console(&out.stderr), Vec::<String>::new());
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1200, 2000));
    let channels = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let not_white = pixels
        .iter()
        .filter(|p| p[..3].iter().any(|&c| c < 240))
        .count();
    let bar_blue = pixels
        .iter()
        .filter(|p| {
            p[0].abs_diff(0x3b) < 12 && p[1].abs_diff(0x6e) < 12 && p[2].abs_diff(0xa5) < 12
        })
        .count();
    assert!(
        not_white > pixels.len() / 50,
        "{not_white} of {} pixels are not white",
        pixels.len()
    );
    assert!(bar_blue > 2_000, "{bar_blue} pixels in the bar colour");
}

#[test]
fn markup_in_recorded_paths_and_values_is_shown_as_text_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, store) = (dir.path().join("xss.pcap"), dir.path().join("store.db"));
    let evil = "/api/<script>alert(1)</script>";
    let mut cap = Capture::default();
    for i in 0..2u16 {
        let target = format!("{evil}?state=<svg/onload=alert(2)>");
        cap.exchange(
            DAY0 + (10 * 3600 + u64::from(i)) * NS,
            (ip("10.77.0.30"), 41_000 + i),
            (ip(PROFILE), 80),
            &[(&request("GET", target.as_bytes()), &response(200, 64))],
        );
    }
    cap.write(&pcap);
    analyze_into(&pcap, &store);
    let c = collector(&store);
    let page = report_page(&c, evil, dir.path());
    let source = std::fs::read_to_string(&page).unwrap();
    assert!(
        !source.contains("<script") && !source.contains("<svg/onload"),
        "{source}"
    );
    let out = browse(&page, &["--dump-dom"]);
    assert_eq!(console(&out.stderr), Vec::<String>::new(), "nothing ran");
    let dom = String::from_utf8(out.stdout).unwrap();
    assert!(!dom.contains("<script"), "{dom}");
    assert!(!dom.contains("<svg/onload"), "{dom}");
    assert!(
        dom.contains("<h1>Report: path /api/&lt;script&gt;alert(1)&lt;/script&gt;</h1>"),
        "{dom}"
    );
    let state = chart(&dom, "filter:state");
    assert_eq!(bars(state), 1);
    assert!(state.contains("&lt;svg/onload=alert(2)&gt;"), "{state}");
}
