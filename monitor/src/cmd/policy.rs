//! `monitor policy`: `lint` (the report on policy files: diagnostics on stderr, `FILE: ok
//! (summary)` on stdout), `dry-run` (the stored history under a candidate policy) and
//! `suggest` (a draft policy from the stored history). The checks themselves are
//! `monitor_policy::load`'s, the work `crate::dry_run`'s and `crate::suggest`'s; this edge reads
//! the arguments and prints what they return.

use std::{
    io::{self, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context as _;

use crate::{
    cli::DryRunArgs, cli::SuggestArgs, client::parse_when, dry_run, dry_run::Range, suggest,
};

use monitor_record::time::unix_now_ns;

use monitor_policy::Policy;

/// `monitor policy lint FILE...`: prints the report ([`lint_files`]) on stdout and stderr; exits
/// with 1 if any file has an error or the report cannot be written.
pub fn lint(files: &[PathBuf]) -> ExitCode {
    let (out, err) = (io::stdout(), io::stderr());
    match lint_files(files, &mut out.lock(), &mut err.lock()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            let _ = writeln!(io::stderr(), "error: cannot write the report: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Checks each file, prints every diagnostic to `err` followed by a `FILE: N error(s)` line, and
/// `FILE: ok (summary)` to `out` for each clean file. Returns `true` when every file is clean.
pub fn lint_files(files: &[PathBuf], out: &mut dyn Write, err: &mut dyn Write) -> io::Result<bool> {
    let mut clean = true;
    for file in files {
        match Policy::load(file) {
            Ok(policy) => writeln!(out, "{}: ok ({})", file.display(), policy.spec.summary())?,
            Err(errors) => {
                clean = false;
                for d in &errors.0 {
                    writeln!(err, "{d}")?;
                }
                let n = errors.0.len();
                writeln!(
                    err,
                    "{}: {n} error{}",
                    file.display(),
                    if n == 1 { "" } else { "s" }
                )?;
            }
        }
    }
    Ok(clean)
}

/// Runs the dry run and prints the changes.
pub fn dry_run(args: DryRunArgs) -> anyhow::Result<()> {
    let policy = Policy::load(&args.policy)
        .map_err(|e| anyhow::anyhow!("--policy {}: rejected:\n{e}", args.policy.display()))?;
    if !args.store.exists() {
        anyhow::bail!(
            "--store {}: no such file (the collector's store, `monitor collector --store`)",
            args.store.display()
        );
    }
    let range = range(&args.since, args.until.as_deref(), args.node.clone())?;
    let d = dry_run::run(&args.store, policy, &range)
        .with_context(|| format!("dry run over {}", args.store.display()))?;
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        print!(
            "{}",
            dry_run::render(
                &d,
                &args.policy.display().to_string(),
                &args.store.display().to_string()
            )
        );
    }
    Ok(())
}

/// Reads `--since`/`--until` into a [`Range`] (no `--until`: no end).
fn range(since: &str, until: Option<&str>, node: Option<String>) -> anyhow::Result<Range> {
    let now = unix_now_ns();
    Ok(Range {
        since_ns: parse_when("--since", since, now)?,
        until_ns: until
            .map(|u| parse_when("--until", u, now))
            .transpose()?
            .unwrap_or(i64::MAX),
        node,
    })
}

/// Drafts a policy from the store and writes it (and the NetworkPolicies) where asked.
pub fn suggest(args: SuggestArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let base = args
        .base
        .as_deref()
        .map(|b| {
            Policy::load(b).map_err(|e| {
                anyhow::anyhow!(
                    "--base {}: rejected:\n{e}\nfix it (`monitor policy lint {}` lists every \
                     problem) or leave --base out",
                    b.display(),
                    b.display()
                )
            })
        })
        .transpose()?;
    if !args.store.exists() {
        anyhow::bail!(
            "--store {}: no such file (the collector's store, `monitor collector --store`, or \
             one written by `monitor analyze --store`)",
            args.store.display()
        );
    }
    let range = range(&args.since, args.until.as_deref(), args.node.clone())?;
    let store = args.store.display().to_string();
    let base_name = args.base.as_ref().map(|b| b.display().to_string());
    let given = match &args.until {
        Some(u) => format!("--since {} --until {u}", args.since),
        None => format!("--since {}", args.since),
    };
    let header = suggest::Header {
        store: &store,
        base: base_name.as_deref(),
        range: &given,
    };
    let show = !args.quiet && io::stderr().is_terminal();
    let mut shown = false;
    let mut progress = |n: u64, t: i64| {
        if show {
            shown = true;
            let _ = write!(
                io::stderr(),
                "\r\x1b[Kreading {store}: {n} records, at {}",
                crate::client::rfc3339_secs(t)
            );
        }
    };
    let s = suggest::suggest(
        &args.store,
        &range,
        base.as_ref(),
        &header,
        args.networkpolicy.is_some(),
        &mut progress,
    )
    .with_context(|| format!("reading {}", args.store.display()))?;
    if shown {
        let _ = write!(io::stderr(), "\r\x1b[K");
    }
    // The draft must load as the agent would load it: anything else is a bug here.
    if let Err(e) = Policy::parse(&s.policy, std::path::Path::new("draft.yaml")) {
        anyhow::bail!(
            "the draft does not pass `monitor policy lint` (a bug in `monitor policy suggest`; \
             please report it with the store's records):\n{e}"
        );
    }
    match &args.output {
        Some(f) => std::fs::write(f, &s.policy)
            .with_context(|| format!("--output {}: cannot write the draft", f.display()))?,
        None => io::stdout().lock().write_all(s.policy.as_bytes())?,
    }
    if let (Some(f), Some(np)) = (&args.networkpolicy, &s.network_policies) {
        std::fs::write(f, np).with_context(|| {
            format!(
                "--networkpolicy {}: cannot write the NetworkPolicies",
                f.display()
            )
        })?;
    }
    let o = &s.observed;
    let review: usize = o.destinations.values().map(|d| d.review.len()).sum();
    let _ = writeln!(
        io::stderr(),
        "suggest: {} HTTP exchanges and {} flows read; {review} route{} under the protected \
         prefixes to review{}",
        o.http_records,
        o.flow_records,
        if review == 1 { "" } else { "s" },
        args.output.as_ref().map_or_else(String::new, |f| format!(
            "; draft written to {}",
            f.display()
        ))
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VANTAGE: &str = include_str!("../../../deploy/examples/vantage/policy.yaml");

    #[test]
    fn lint_files_output() {
        let dir = std::env::temp_dir().join(format!("monitor-policy-lint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.yaml");
        let bad = dir.join("bad.yaml");
        std::fs::write(&good, VANTAGE).unwrap();
        std::fs::write(&bad, "version: 3\n").unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let clean = lint_files(&[good.clone(), bad.clone()], &mut out, &mut err).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!clean);
        let out = String::from_utf8(out).unwrap();
        let err = String::from_utf8(err).unwrap();
        let s = Policy::parse(VANTAGE, &good).unwrap().spec.summary();
        assert_eq!(out, format!("{}: ok ({s})\n", good.display()));
        assert!(
            err.contains(&format!(
                "{}:1:10: error: version: unsupported policy version 3",
                bad.display()
            )),
            "{err}"
        );
        assert!(
            err.ends_with(&format!("{}: 1 error\n", bad.display())),
            "{err}"
        );
    }
}
