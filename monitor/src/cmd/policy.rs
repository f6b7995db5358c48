//! `monitor policy`: `lint` (the report on policy files: diagnostics on stderr, `FILE: ok
//! (summary)` on stdout) and `dry-run` (the stored history under a candidate policy). The
//! checks themselves are `monitor_policy::load`'s; this edge only prints what they return.

use std::{
    io::{self, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context as _;

use crate::{cli::DryRunArgs, client::parse_when, dry_run, dry_run::Range};

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
    let now = unix_now_ns();
    let since_ns = parse_when("--since", &args.since, now)?;
    let until_ns = args
        .until
        .as_deref()
        .map(|u| parse_when("--until", u, now))
        .transpose()?
        .unwrap_or(i64::MAX);
    let range = Range {
        since_ns,
        until_ns,
        node: args.node.clone(),
    };
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
