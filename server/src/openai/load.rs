//! `POST /v1/models/load`: the request's checks; the swap itself is the registry's.

use std::sync::Arc;

use hyper::{Response, StatusCode};
use serde_json::json;
use trillim_runtime::{LoraQuant, UnembedQuant};

use super::{request, ApiError};
use crate::harness::{Harness, HarnessConfig};
use crate::http::body::Body;
use crate::http::router::json_response;
use crate::registry;
use crate::state::AppState;

/// Every level the API names; those this build lacks get a message saying so.
const LORA_QUANTS: &[&str] = &["none", "bf16", "int8", "q4_0", "q5_0", "q6_k", "q8_0"];

/// `POST /v1/models/load`: validate everything, load the new model while the old one keeps
/// serving, then let the old one drain its queue (new requests get 503) and switch.
pub(crate) async fn load(state: &Arc<AppState>, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let m = request::parse_object(body)?;
    let r = request::load(&m)?;
    let current = state.harness();
    let harness = HarnessConfig {
        harness: Harness::choose(
            r.harness.as_deref(),
            r.search_provider.as_deref(),
            current.harness,
        )
        .map_err(|(field, msg)| ApiError::invalid_param(field, msg))?,
        markers: super::generate::search_markers(&m)?.unwrap_or(current.markers),
    };
    let lora_quant = match &r.lora_quant {
        None => LoraQuant::default(),
        Some(v) if !LORA_QUANTS.contains(&v.as_str()) => {
            return Err(ApiError::invalid_param(
                "lora_quant",
                format!(
                    "Unknown lora_quant '{v}'. Accepted: {}",
                    LoraQuant::NAMES.join(", ")
                ),
            ));
        }
        Some(v) => LoraQuant::parse(v).map_err(|msg| ApiError::invalid_param("lora_quant", msg))?,
    };
    // An empty adapter_dir means none, as null does.
    let adapter_dir = r.adapter_dir.as_deref().filter(|a| !a.is_empty());
    if r.lora_quant.is_some() && adapter_dir.is_none() {
        return Err(ApiError::invalid_param(
            "lora_quant",
            "lora_quant applies to an adapter; give adapter_dir too".to_string(),
        ));
    }
    let unembed_quant = match &r.unembed_quant {
        None => None,
        Some(v) => Some(
            UnembedQuant::parse(v).map_err(|msg| ApiError::invalid_param("unembed_quant", msg))?,
        ),
    };
    let adapter = adapter_dir.map(|a| (a, lora_quant));
    let done = registry::swap(state, &r.model_dir, adapter, r.threads, unembed_quant).await?;
    // The new model is in service; its chat requests go through the harness asked for.
    *state.harness.write().unwrap_or_else(|e| e.into_inner()) = harness;
    tracing::info!(harness = harness.harness.name(), provider = ?harness.harness.provider(),
        markers = harness.markers, "harness set");
    Ok(json_response(
        StatusCode::OK,
        &json!({"status": "success", "model": done.name, "recompiled": done.recompiled, "message": ""}),
    ))
}
