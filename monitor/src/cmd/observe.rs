//! `monitor observe` and `monitor report`: the CLI's questions to the collector.

use std::io::{IsTerminal as _, Write as _};

use anyhow::Context as _;

use crate::{cli::ObserveArgs, cli::OutputFormat, cli::ReportArgs, client, client::parse_when};

use monitor_collector::report;

use monitor_wire::{
    proto::ObserveRequest, proto::ReportRequest, proto::observe_client::ObserveClient,
    proto::report_client::ReportClient, proto::report_request::Subject,
};

fn status_error(s: &tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("the collector answered {:?}: {}", s.code(), s.message())
}

/// Streams matching records to stdout until the stream ends (or forever with --follow).
pub async fn observe(args: ObserveArgs) -> anyhow::Result<()> {
    let now = monitor_record::time::unix_now_ns();
    let req = ObserveRequest {
        kind: args.kind,
        rule: args.rule,
        namespace: args.namespace.unwrap_or_default(),
        pod: args.pod.unwrap_or_default(),
        service: args.service.unwrap_or_default(),
        min_severity: args.severity.unwrap_or_default(),
        since_unix_nano: args
            .since
            .map(|s| parse_when("--since", &s, now))
            .transpose()?
            .unwrap_or(0),
        until_unix_nano: args
            .until
            .map(|s| parse_when("--until", &s, now))
            .transpose()?
            .unwrap_or(0),
        follow: args.follow,
        limit: args.limit.unwrap_or(0),
        node: args.node.unwrap_or_default(),
    };
    let table = args.output.map_or_else(
        || std::io::stdout().is_terminal(),
        |o| o == OutputFormat::Table,
    );
    let channel = client::connect(&args.client.collector, &args.client.tls).await?;
    let mut stream = ObserveClient::new(channel)
        .observe(req)
        .await
        .map_err(|s| status_error(&s))?
        .into_inner();
    let mut out = std::io::stdout().lock();
    if table {
        writeln!(out, "{}", client::table_header())?;
    }
    while let Some(rec) = stream.message().await.map_err(|s| status_error(&s))? {
        if table {
            writeln!(out, "{}", client::table_row(&rec))?;
        } else {
            writeln!(out, "{}", rec.json)?;
        }
        out.flush()?;
    }
    Ok(())
}

/// Asks for a report and prints it.
pub async fn report(args: ReportArgs) -> anyhow::Result<()> {
    let now = monitor_record::time::unix_now_ns();
    let subject = match (args.path, args.rule, args.pod) {
        (Some(p), _, _) => Subject::Path(p),
        (_, Some(r), _) => Subject::Rule(r),
        (_, _, Some(p)) => Subject::Pod(p),
        _ => anyhow::bail!("give one of --path, --rule or --pod"),
    };
    let req = ReportRequest {
        subject: Some(subject),
        since_unix_nano: args
            .since
            .map(|s| parse_when("--since", &s, now))
            .transpose()?
            .unwrap_or(0),
        until_unix_nano: args
            .until
            .map(|s| parse_when("--until", &s, now))
            .transpose()?
            .unwrap_or(0),
        top: args.top,
    };
    let text = args.output.map_or_else(
        || std::io::stdout().is_terminal(),
        |o| o == OutputFormat::Table,
    );
    let channel = client::connect(&args.client.collector, &args.client.tls).await?;
    let resp = ReportClient::new(channel)
        .report(req)
        .await
        .map_err(|s| status_error(&s))?
        .into_inner();
    let mut out = std::io::stdout().lock();
    if text {
        write!(out, "{}", report::render(&resp))?;
    } else {
        let json =
            serde_json::to_string_pretty(&resp).context("cannot encode the report as JSON")?;
        writeln!(out, "{json}")?;
    }
    Ok(())
}
