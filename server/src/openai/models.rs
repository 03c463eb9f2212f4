//! `GET /health`, `/v1/models`, `/v1/models/{id}` and `/metrics`.

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::ApiError;
use crate::engines::llm::Engine;
use crate::http::body::Body;
use crate::http::router::json_response;
use crate::state::AppState;

pub(crate) fn metrics(state: &AppState) -> Response<Body> {
    let mut r = Response::new(Body::full(state.metrics.render()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
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
