//! `monitor policy dry-run`: the stored history under a candidate policy.

use anyhow::Context as _;

use crate::{cli::DryRunArgs, client::parse_when, dry_run, dry_run::Range};

use monitor_record::time::unix_now_ns;

use monitor_policy::Policy;

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
