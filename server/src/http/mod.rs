//! The HTTP transport on hyper: accepting connections under the limits ([`limits`]), routing
//! ([`router`]) and response bodies ([`body`], server-sent events included). Handlers live in
//! [`crate::openai`].

pub mod body;
pub mod limits;
pub mod router;

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::state::AppState;
use limits::Admission;
use router::handle;

/// Accepts connections until Ctrl+C or SIGTERM, then lets open connections finish (briefly).
/// Connections past `--max-connections` are answered 503 and closed ([`limits`]).
pub async fn serve(state: Arc<AppState>, listener: TcpListener) -> anyhow::Result<()> {
    let limits = state.settings.limits;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let permit = match state.guards.admit() {
                    Admission::Serve(p) => p,
                    Admission::Reject(p) => {
                        tracing::debug!(%peer, "connection limit reached: answering 503");
                        tokio::spawn(limits::reject(stream, p));
                        continue;
                    }
                    Admission::Drop => continue,
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let svc = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(state, req, peer).await) }
                });
                // The head deadline runs from connection open and from the end of each
                // response, so it is the keep-alive idle timeout too; heads (and read
                // buffers) are capped at 64 KiB.
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(limits.header_timeout)
                    .max_buf_size(64 * 1024)
                    .serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                break;
            }
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(3)) => {}
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
