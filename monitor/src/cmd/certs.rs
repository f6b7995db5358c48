//! `monitor certs init|issue`.

use std::path::Path;

use anyhow::{Context as _, bail};

use crate::cli::CertsCommand;

use monitor_wire::{tls::Certs, tls::Usage};

/// Runs a `monitor certs` subcommand; prints what it wrote.
pub fn run(cmd: CertsCommand) -> anyhow::Result<()> {
    match cmd {
        CertsCommand::Init {
            out,
            collector_names,
            clients,
            days,
        } => {
            let mut names = vec!["ca".to_owned(), "collector".to_owned()];
            names.extend(clients.iter().cloned());
            for n in &names {
                for ext in ["pem", "key"] {
                    let p = out.join(format!("{n}.{ext}"));
                    if p.exists() {
                        bail!(
                            "{} exists; not overwriting certificates (remove the directory, or \
                             use `monitor certs issue` to add one)",
                            p.display()
                        );
                    }
                }
            }
            let ca = Certs::ca("monitor CA", days)?;
            Certs::write(&out, "ca", &ca)?;
            let srv = Certs::leaf(
                &ca,
                "monitor-collector",
                &collector_names,
                Usage::Server,
                i64::from(days),
            )?;
            Certs::write(&out, "collector", &srv)?;
            for c in &clients {
                let leaf = Certs::leaf(&ca, c, &[], Usage::Client, i64::from(days))?;
                Certs::write(&out, c, &leaf)?;
            }
            report(&out, &names);
            println!(
                "collector names: {}; valid {days} days. Keep ca.key offline in production.",
                collector_names.join(", ")
            );
            Ok(())
        }
        CertsCommand::Issue {
            dir,
            name,
            server_names,
            days,
        } => {
            let ca = Certs::read_ca(&dir).context("`monitor certs issue` needs the CA")?;
            let usage = if server_names.is_empty() {
                Usage::Client
            } else {
                Usage::Server
            };
            let leaf = Certs::leaf(&ca, &name, &server_names, usage, i64::from(days))?;
            Certs::write(&dir, &name, &leaf)?;
            report(&dir, &[name]);
            Ok(())
        }
    }
}

fn report(dir: &Path, names: &[String]) {
    for n in names {
        println!(
            "wrote {} and {}",
            dir.join(format!("{n}.pem")).display(),
            dir.join(format!("{n}.key")).display()
        );
    }
}
