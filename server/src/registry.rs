//! The models a server runs: what is in service, and swapping it at run time. A swap loads and
//! validates the new model while the old one keeps serving, then stops the old one's intake
//! (requests get 503), lets its running and queued requests finish, and switches.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use trillim_runtime::{LoadOptions, LoraQuant, UnembedQuant};

use crate::engines::llm::{self as engine, Engine};
use crate::openai::ApiError;
use crate::state::AppState;
use crate::store::StoreError;

/// What the server is serving.
#[derive(Debug, Clone)]
pub enum Slot {
    /// The first model is still loading (the server answers while it does).
    Loading,
    /// Nothing loaded (startup failed, or a swap failed after the old model was dropped).
    NoModel,
    /// A model serves requests.
    Running(Arc<Engine>),
    /// A swap is replacing the model.
    Swapping,
}

impl AppState {
    /// The engine serving now, or the error a request gets while there is none.
    pub(crate) fn engine(&self) -> Result<Arc<Engine>, ApiError> {
        match &*self.slot.read().unwrap_or_else(|e| e.into_inner()) {
            Slot::Running(e) => Ok(e.clone()),
            Slot::Swapping => Err(ApiError::swapping()),
            Slot::Loading => Err(ApiError::loading()),
            Slot::NoModel => Err(ApiError::no_model()),
        }
    }

    /// Puts `s` in service.
    pub(crate) fn set_slot(&self, s: Slot) {
        *self.slot.write().unwrap_or_else(|e| e.into_inner()) = s;
    }
}

pub(crate) fn store_error(e: StoreError) -> ApiError {
    match e.status() {
        403 => ApiError::forbidden(e.to_string()),
        404 => ApiError::not_found(e.to_string()),
        400 => ApiError::invalid_param("model_dir", e.to_string()),
        _ => ApiError::internal(e.to_string()),
    }
}

/// What a finished swap put in service.
#[derive(Debug)]
pub struct Swapped {
    /// The model's short name.
    pub name: String,
    /// Whether the load built something new (a re-encoded output matrix).
    pub recompiled: bool,
}

/// Where an adapter named by a load request lies: `adapter_dir` is a store id or a path
/// inside the store; anything leading outside it (`..`, absolute paths elsewhere, symlinks
/// pointing out) is refused (403); a name that does not exist is a bad value (400).
pub(crate) fn resolve_adapter(root: &Path, adapter_dir: &str) -> Result<PathBuf, ApiError> {
    let bad = |msg: String| ApiError::invalid_param("adapter_dir", msg);
    if adapter_dir.is_empty() {
        return Err(bad("adapter_dir is empty; omit it or set it to null".into()));
    }
    let p = Path::new(adapter_dir);
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(ApiError::forbidden(format!(
            "adapter '{adapter_dir}' is outside the model store"
        )));
    }
    let candidate = if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    };
    let outside = || {
        ApiError::forbidden(format!(
            "adapter '{adapter_dir}' is outside the model store; only adapters in the store can be loaded"
        ))
    };
    // A missing adapter is a bad value of the request (400), as a missing file in it is.
    let missing = || bad(format!("adapter '{adapter_dir}' not found in the store"));
    let canon_root = root.canonicalize().map_err(|_| missing())?;
    let canon = candidate.canonicalize().map_err(|_| {
        if p.is_absolute() && !p.starts_with(root) && !p.starts_with(&canon_root) {
            outside()
        } else {
            missing()
        }
    })?;
    if !canon.starts_with(&canon_root) || canon == canon_root {
        return Err(outside());
    }
    Ok(canon)
}

/// Replaces the model in service with `model_dir` (a store id or a path in the store), with
/// the LoRA adapter `adapter` (a store id or path in the store, and how to store it) or none;
/// `threads: None` keeps the current setting. Fails, with the old model still serving, on
/// anything wrong with the new one; 409 while another swap runs.
pub(crate) async fn swap(
    state: &Arc<AppState>,
    model_dir: &str,
    adapter: Option<(&str, LoraQuant)>,
    threads: Option<usize>,
    unembed_quant: Option<UnembedQuant>,
) -> Result<Swapped, ApiError> {
    let store = state.store.clone();
    let dir = model_dir.to_string();
    let adapter = adapter.map(|(a, q)| (a.to_string(), q));
    let (resolved, adapter) = tokio::task::spawn_blocking(move || {
        let model = store.resolve_api(&dir).map_err(store_error)?;
        let adapter = match adapter {
            None => None,
            Some((a, quant)) => Some(engine::AdapterSpec {
                path: resolve_adapter(store.root(), &a)?,
                quant,
            }),
        };
        Ok::<_, ApiError>((model, adapter))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let Ok(_guard) = state.swap.try_lock() else {
        return Err(ApiError::conflict("Model swap already in progress"));
    };
    let threads = match threads {
        Some(t) => t,
        None => *state.threads.lock().unwrap_or_else(|e| e.into_inner()),
    };
    let shape = engine::ServeShape {
        ctx: state.settings.ctx,
        threads,
        slots: state.settings.parallel,
    };
    tracing::info!(model = %resolved.id, path = %resolved.gguf.display(), "loading model");
    let res = resolved.clone();
    let t_load = Instant::now();
    let prepared = tokio::task::spawn_blocking(move || {
        engine::prepare_adapted(
            &res.id,
            &res.name,
            &res.gguf,
            res.dir.as_deref(),
            shape,
            LoadOptions { unembed_quant },
            adapter.as_ref(),
        )
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| match e {
        engine::PrepareError::Load(trillim_runtime::LoadError::Io { .. }) => {
            ApiError::internal(e.to_string())
        }
        engine::PrepareError::Adapter(a) => {
            ApiError::invalid_param("adapter_dir", format!("cannot load the adapter: {a}"))
        }
        // The error names the file and the cause once; say which model was asked for.
        other => {
            ApiError::invalid_param("model_dir", format!("cannot load {}: {other}", resolved.id))
        }
    })?;
    // Validated: now take the old model out of service and let its queue drain on it.
    let old = std::mem::replace(
        &mut *state.slot.write().unwrap_or_else(|e| e.into_inner()),
        Slot::Swapping,
    );
    if let Slot::Running(old) = old {
        tokio::task::spawn_blocking(move || old.shutdown())
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
    }
    let name = prepared.shared.name.clone();
    let recompiled = prepared.recompiled();
    state.metrics.model_loaded(
        t_load.elapsed().as_secs_f64(),
        prepared.shared.slots,
        prepared.shared.ctx,
    );
    let engine = Engine::start(prepared, state.settings.max_queue, state.metrics.clone());
    state.set_slot(Slot::Running(Arc::new(engine)));
    *state.threads.lock().unwrap_or_else(|e| e.into_inner()) = threads;
    tracing::info!(model = %resolved.id, "model swapped in");
    Ok(Swapped { name, recompiled })
}
