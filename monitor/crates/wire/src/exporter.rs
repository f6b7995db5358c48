//! The Prometheus endpoint: `/metrics` (OpenMetrics text) and `/healthz`, served over plain
//! HTTP/1.1 for whatever implements [`Exporter`] (the agent's and the collector's metrics).

use std::{convert::Infallible, sync::Arc};

use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;

/// What the `/metrics` + `/healthz` endpoint serves: the agent's or the collector's metrics.
pub trait Exporter: Send + Sync + 'static {
    /// The OpenMetrics text exposition.
    fn encode(&self) -> String;
    /// `Ok(body)` when healthy (200), `Err(body)` when not (503).
    fn health(&self) -> Result<&'static str, &'static str>;
}

async fn handle<E: Exporter>(
    req: Request<hyper::body::Incoming>,
    metrics: Arc<E>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, ctype, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        "/healthz" => match metrics.health() {
            Ok(b) => (StatusCode::OK, "text/plain", b.to_owned()),
            Err(b) => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", b.to_owned()),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics or /healthz\n".to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    Ok(resp)
}

/// Serves `/metrics` and `/healthz` on `listener` until the task is dropped. Binding is the
/// caller's, so a bad address is an error at start, not a log line later.
pub async fn serve<E: Exporter>(listener: tokio::net::TcpListener, metrics: Arc<E>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics on /metrics, health on /healthz");
    }
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, m.clone()));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}
