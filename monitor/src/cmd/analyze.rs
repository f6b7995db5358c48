//! `monitor analyze`: capture files through the pipeline; a summary on stderr.

use std::{path::Path, time::Duration, time::Instant};

use anyhow::{Context as _, bail};

use crate::{
    analyze, analyze::Options, analyze::Summary, analyze::flowtable::Limits,
    analyze::output::AnalyzeOut, analyze::progress::Progress, analyze::reader::CaptureFile,
    analyze::reader::Merged, cli::AnalyzeArgs,
};

use monitor_collector::{sink::SinkSpec, sink::spec::KINDS, store::Store, store::StoreOptions};

use monitor_record::time::format_rfc3339;

use monitor_agent::{identity::Inventory, identity::PodResolver as _, pipeline::new_boot_id};

use monitor_policy::Policy;

/// Runs the analysis; an error when a file could not be read to its end (after writing
/// everything that was read).
pub fn run(args: AnalyzeArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let kinds = if args.kinds.iter().any(|k| k == "all") {
        Vec::new()
    } else {
        for k in &args.kinds {
            if !KINDS.contains(&k.as_str()) {
                bail!(
                    "--kinds: unknown kind {k:?}; use some of {} or all",
                    KINDS.join(", ")
                );
            }
        }
        args.kinds.clone()
    };
    let sinks = args
        .sinks
        .iter()
        .map(|s| {
            SinkSpec::parse(s)
                .with_context(|| format!("--sink {s:?}"))?
                .build()
                .with_context(|| format!("--sink {s:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Identity by address only: no cgroups are read.
    let mut identity = Inventory::load(&args.inventory, Path::new("/nonexistent"))
        .with_context(|| format!("--inventory {}", args.inventory.display()))?;
    let policy = args
        .policy
        .as_deref()
        .map(Policy::load)
        .transpose()
        .map_err(|e| anyhow::anyhow!("policy rejected:\n{e}"))?;
    if policy.is_none() {
        tracing::warn!("no --policy: no violations will be found, only records");
    }
    let mut files = Vec::new();
    let mut open_errors = Vec::new();
    for p in &args.captures {
        match CaptureFile::open(p) {
            Ok(f) => files.push(f),
            Err(e) => {
                tracing::error!("{e}");
                open_errors.push(e);
            }
        }
    }
    if files.is_empty() {
        bail!(
            "no capture could be read:\n  {}",
            open_errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
    let store = args
        .store
        .as_deref()
        .map(|p| {
            Store::open(p, StoreOptions::default())
                .with_context(|| format!("--store {}", p.display()))
        })
        .transpose()?;
    let node = args
        .node
        .clone()
        .unwrap_or_else(|| identity.node().to_owned());
    let boot_id = new_boot_id();
    let mut out = AnalyzeOut::new(&node, &boot_id, kinds, sinks, store);
    let opts = Options {
        node,
        boot_id,
        limits: Limits {
            max_flows: args.max_flows.max(1),
            ..Limits::default()
        },
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
    };
    let mut progress = Progress::new(!args.quiet);
    let sum = analyze::run(
        Merged::new(files),
        &mut identity,
        policy,
        &opts,
        &mut out,
        &mut progress,
    )
    .context("analysis failed")?;
    print_summary(&sum, &out, &opts, started.elapsed());
    let problems: Vec<String> = open_errors
        .iter()
        .map(ToString::to_string)
        .chain(sum.errors.iter().map(ToString::to_string))
        .collect();
    if !problems.is_empty() {
        bail!(
            "{} capture file(s) could not be read to the end:\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
    Ok(())
}

fn print_summary(s: &Summary, out: &AnalyzeOut, opts: &Options, wall: Duration) {
    let secs = wall.as_secs_f64().max(1e-6);
    let span = s.span_ns.map_or_else(
        || "no packets".to_owned(),
        |(a, b)| {
            let f =
                |ns: u64| format_rfc3339(i64::try_from(ns).unwrap_or(i64::MAX)).unwrap_or_default();
            format!("{} .. {}", f(a), f(b))
        },
    );
    let f = &s.flows;
    let kinds: Vec<String> = out.counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
    eprintln!(
        "analyze: {} packets, {:.1} MB in {:.2} s ({:.0} packets/s, {:.1} MB/s); capture time {span}\n\
         analyze: {} TCP segments in {} flows (at most {} open); {} out of order, {} retransmitted, \
         {} gaps missing ({} bytes); {} not TCP, {} undecodable, {} IP fragments, {} on unsupported links, \
         {} flows over the {} limit\n\
         analyze: {} records as node {:?} boot_id {}: {}{}",
        s.packets,
        s.bytes as f64 / 1e6,
        secs,
        s.packets as f64 / secs,
        s.bytes as f64 / 1e6 / secs,
        f.segments,
        f.flows,
        s.peak_flows,
        f.out_of_order,
        f.retransmitted,
        f.missing_segments,
        f.missing_bytes,
        s.not_tcp,
        f.undecodable,
        s.fragments,
        s.unsupported_link,
        f.flow_table_full,
        opts.limits.max_flows,
        s.records,
        opts.node,
        opts.boot_id,
        kinds.join(", "),
        if out.stored > 0 {
            format!("; {} stored", out.stored)
        } else {
            String::new()
        }
    );
}
