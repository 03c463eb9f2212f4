//! The HTTP transport on hyper: accepting connections under the limits ([`limits`]), routing
//! ([`router`]) and response bodies ([`body`], server-sent events included). Handlers live in
//! [`crate::openai`].

pub mod body;
pub mod limits;
mod page;
pub mod router;

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::state::AppState;
use limits::Admission;
use router::handle;

/// Accepts connections until Ctrl+C or SIGTERM, then drains: the replica reports not ready,
/// answers new work with a retryable 503, keeps accepting until the engine has finished what
/// it runs (or `--drain-timeout` passes), then lets open responses complete within what is
/// left of it and returns. A second signal stops at once. Connections past
/// `--max-connections` are answered 503 and closed ([`limits`]).
pub async fn serve(state: Arc<AppState>, listener: TcpListener) -> anyhow::Result<()> {
    let limits = state.settings.limits;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
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
                if deadline.is_some() {
                    tracing::info!("second signal: stopping now");
                    return Ok(());
                }
                let drain = state.settings.drain_timeout;
                tracing::info!(seconds = drain.as_secs_f64(), "draining: finishing running requests");
                state.draining.store(true, std::sync::atomic::Ordering::Relaxed);
                deadline = Some(tokio::time::Instant::now() + drain);
                shutdown.set(shutdown_signal());
            }
            _ = state.stop.notified() => break,
            _ = tick.tick(), if deadline.is_some() => {
                if state.metrics.idle() || deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    break;
                }
            }
        }
    }
    drop(listener);
    let left = deadline
        .map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
        .unwrap_or(Duration::from_secs(3))
        .max(Duration::from_millis(500));
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(left) => tracing::warn!("drain timeout: closing the remaining connections"),
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
