//! The state every request handler shares: settings fixed at start-up, the model registry, the
//! store, the limits' counters and the metrics; and the server's random ids.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::engines::llm::Engine;
use crate::harness::HarnessConfig;
use crate::http::limits::{Guards, Limits};
use crate::metrics::Metrics;
use crate::registry::Slot;
use crate::store::Store;

/// Server settings fixed at startup.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Requests allowed to wait for a free slot.
    pub max_queue: usize,
    /// Sequences generated at once.
    pub parallel: usize,
    /// Context size (`None`: the model's default).
    pub ctx: Option<usize>,
    /// Required bearer token.
    pub api_key: Option<String>,
    /// Connection, time and body-memory limits.
    pub limits: Limits,
    /// The browser policy's lists and where the server is bound.
    pub browser: BrowserSettings,
    /// After SIGTERM: how long running requests get to finish before the server exits.
    pub drain_timeout: Duration,
}

/// The browser policy as configured (see [`trillim_core::browser`]).
#[derive(Debug, Clone, Default)]
pub struct BrowserSettings {
    /// `--cors-origins`: origins allowed besides loopback ones (`*`: any).
    pub cors_origins: Vec<String>,
    /// `--allowed-hosts`: `Host` names served besides loopback ones (`*`: any).
    pub allowed_hosts: Vec<String>,
    /// The address given to `--host`.
    pub bound: String,
    /// Whether `Host` is checked (a loopback bind, or hosts listed).
    pub check_host: bool,
}

/// Shared server state.
#[derive(Debug)]
pub struct AppState {
    /// The model slot.
    pub slot: RwLock<Slot>,
    /// Held for the whole of a model swap.
    pub(crate) swap: tokio::sync::Mutex<()>,
    /// Threads for the next load (`threads: null` keeps this).
    pub threads: Mutex<usize>,
    /// Settings.
    pub settings: Settings,
    /// The model store.
    pub store: Store,
    /// Connection and body-memory counters.
    pub guards: Guards,
    /// What `/metrics` reports.
    pub metrics: Arc<Metrics>,
    /// The harness chat requests go through (set by `--harness` and model loads).
    pub harness: RwLock<HarnessConfig>,
    /// The speech-to-text engine (`--voice`); `None` turns the voice routes off.
    pub stt: Option<crate::engines::stt::Stt>,
    /// The text-to-speech engine (`--voice` with a pocket-tts model).
    pub tts: Option<crate::engines::tts::Tts>,
    /// Whether `--voice` was given (the voice routes exist).
    pub voice: bool,
    /// Told to stop (SIGTERM or Ctrl+C): not ready, new work is refused, running work finishes.
    pub draining: AtomicBool,
    /// Wakes the accept loop to shut down without a signal (a failed start-up load).
    pub stop: tokio::sync::Notify,
}

impl AppState {
    /// State serving `engine` (if any).
    pub fn new(
        engine: Option<Engine>,
        threads: usize,
        settings: Settings,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> AppState {
        let slot = match engine {
            Some(e) => Slot::Running(Arc::new(e)),
            None => Slot::NoModel,
        };
        AppState {
            slot: RwLock::new(slot),
            swap: tokio::sync::Mutex::new(()),
            threads: Mutex::new(threads),
            guards: Guards::new(settings.limits),
            settings,
            store,
            metrics,
            harness: RwLock::new(HarnessConfig::default()),
            stt: None,
            tts: None,
            voice: false,
            draining: AtomicBool::new(false),
            stop: tokio::sync::Notify::new(),
        }
    }

    /// The same state with speech-to-text served by `stt`.
    pub fn with_stt(mut self, stt: crate::engines::stt::Stt) -> AppState {
        self.stt = Some(stt);
        self.voice = true;
        self
    }

    /// The same state with text-to-speech served by `tts`.
    pub fn with_tts(mut self, tts: crate::engines::tts::Tts) -> AppState {
        self.tts = Some(tts);
        self.voice = true;
        self
    }

    /// Whether the server is draining (see [`AppState::draining`]).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The harness in use.
    pub(crate) fn harness(&self) -> HarnessConfig {
        *self.harness.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// A new response id: 128 bits from the operating system's random source, so ids can neither
/// be guessed nor tell how many requests the server has seen.
pub(crate) fn new_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        b[..8].copy_from_slice(&random_u64().to_le_bytes());
        b[8..].copy_from_slice(&random_u64().to_le_bytes());
    }
    let mut s = String::with_capacity(32);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// A random 64-bit value (a sampling seed), from the operating system's random source; the
/// standard library's per-process hash keys and the clock if it is unavailable.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_ok() {
        return u64::from_le_bytes(b);
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
