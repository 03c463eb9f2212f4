//! `GET /health`, `/livez`, `/readyz`, `/v1/models`, `/v1/models/{id}` and `/metrics`.

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::ApiError;
use crate::engines::llm::Engine;
use crate::http::body::Body;
use crate::http::router::json_response;
use crate::registry::Slot;
use crate::state::AppState;

pub(crate) fn metrics(state: &AppState) -> Response<Body> {
    let mut r = Response::new(Body::full(state.metrics.render()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// `GET /livez`: the process is up and answering HTTP (liveness; never fails for a model
/// that is loading, swapping or draining, so an orchestrator does not restart it for that).
pub(crate) fn livez() -> Response<Body> {
    json_response(StatusCode::OK, &json!({"status": "alive"}))
}

/// `GET /readyz`: whether a load balancer should send this replica work: 200 only while a
/// model serves and the server is not draining; otherwise 503 with `Retry-After` and the
/// reason (`loading`, `swapping`, `no_model`, `draining`).
pub(crate) fn readyz(state: &AppState) -> Response<Body> {
    let status = if state.is_draining() {
        Err("draining")
    } else {
        match &*state.slot.read().unwrap_or_else(|e| e.into_inner()) {
            Slot::Running(e) => Ok(e.shared.name.clone()),
            Slot::Loading => Err("loading"),
            Slot::Swapping => Err("swapping"),
            Slot::NoModel => Err("no_model"),
        }
    };
    match status {
        Ok(model) => json_response(StatusCode::OK, &json!({"status": "ready", "model": model})),
        Err(why) => {
            let mut r = json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"status": why}));
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
    }
}

pub(crate) fn health(state: &AppState) -> Result<Response<Body>, ApiError> {
    let e = state.engine()?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"status": "ok", "model": e.shared.name}),
    ))
}

fn model_entry(e: &Engine) -> Value {
    json!({"id": e.shared.name, "object": "model", "created": e.shared.created, "owned_by": "local"})
}

pub(crate) fn models(state: &AppState) -> Result<Response<Body>, ApiError> {
    let data: Vec<Value> = state
        .engine()
        .ok()
        .map(|e| model_entry(&e))
        .into_iter()
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": data}),
    ))
}

pub(crate) fn retrieve_model(state: &AppState, id: &str) -> Result<Response<Body>, ApiError> {
    match state.engine() {
        Ok(e) if e.shared.name == id || e.shared.id == id => {
            Ok(json_response(StatusCode::OK, &model_entry(&e)))
        }
        _ => Err(ApiError::not_found(format!(
            "The model '{id}' is not loaded"
        ))),
    }
}
