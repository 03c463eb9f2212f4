//! The hyperparameters a pocket-tts model's tensors do not tell: attention heads, rates and
//! text-preparation rules. Read from an optional `config.json` in the model directory; the
//! defaults are those of Kyutai's released English model (`config/english.yaml`).

use std::path::Path;

use serde_json::Value;

use super::TtsError;

/// How the flow head turns noise into a latent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowType {
    /// Lagrangian self-distillation: start and target times, one step.
    Lsd,
    /// Euler integration of a conditional flow (one time condition).
    FlowMatching,
    /// The noise plus the head's output.
    Pointwise,
    /// The head's output.
    Drifting,
}

/// A model's configuration.
#[derive(Debug, Clone)]
pub struct TtsConfig {
    pub num_heads: usize,
    pub kv_heads: Option<usize>,
    pub attn_dim: Option<usize>,
    pub max_period: f32,
    pub flow_type: FlowType,
    pub mimi_heads: usize,
    pub mimi_context: usize,
    pub mimi_max_period: f32,
    pub ratios: Vec<usize>,
    pub residual_layers: usize,
    pub dilation_base: usize,
    pub sample_rate: u32,
    pub frame_rate: f32,
    pub temperature: f32,
    pub eos_threshold: f32,
    /// Per-character rewrites before tokenization.
    pub replace_characters: Vec<(char, String)>,
}

impl Default for TtsConfig {
    fn default() -> TtsConfig {
        TtsConfig {
            num_heads: 16,
            kv_heads: None,
            attn_dim: None,
            max_period: 10000.0,
            flow_type: FlowType::Lsd,
            mimi_heads: 8,
            mimi_context: 250,
            mimi_max_period: 10000.0,
            ratios: vec![6, 5, 4],
            residual_layers: 1,
            dilation_base: 2,
            sample_rate: 24000,
            frame_rate: 12.5,
            temperature: 0.3,
            eos_threshold: -4.0,
            replace_characters: vec![('\u{2019}', "'".into()), ('\u{2018}', "'".into())],
        }
    }
}

impl TtsConfig {
    /// `dir/config.json` over the defaults, or the defaults when there is none.
    pub fn load(dir: &Path) -> Result<TtsConfig, TtsError> {
        let path = dir.join("config.json");
        let mut c = TtsConfig::default();
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(c);
        };
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| TtsError::Weights(format!("{}: {e}", path.display())))?;
        let int = |k: &str| v.get(k).and_then(Value::as_u64).map(|x| x as usize);
        let float = |k: &str| v.get(k).and_then(Value::as_f64).map(|x| x as f32);
        if let Some(x) = int("num_heads") {
            c.num_heads = x;
        }
        c.kv_heads = int("num_kv_heads").or(c.kv_heads);
        c.attn_dim = int("attn_dim").or(c.attn_dim);
        if let Some(x) = float("max_period") {
            c.max_period = x;
        }
        if let Some(x) = int("mimi_heads") {
            c.mimi_heads = x;
        }
        if let Some(x) = int("mimi_context") {
            c.mimi_context = x;
        }
        if let Some(x) = int("residual_layers") {
            c.residual_layers = x;
        }
        if let Some(r) = v.get("ratios").and_then(Value::as_array) {
            c.ratios = r
                .iter()
                .filter_map(Value::as_u64)
                .map(|x| x as usize)
                .collect();
        }
        if let Some(x) = int("sample_rate") {
            c.sample_rate = x as u32;
        }
        if let Some(x) = float("frame_rate") {
            c.frame_rate = x;
        }
        if let Some(x) = float("default_temperature") {
            c.temperature = x;
        }
        if let Some(x) = float("eos_threshold") {
            c.eos_threshold = x;
        }
        if let Some(t) = v.get("flow_type").and_then(Value::as_str) {
            c.flow_type = match t {
                "lsd" => FlowType::Lsd,
                "flow_matching" => FlowType::FlowMatching,
                "pointwise" => FlowType::Pointwise,
                "drifting" => FlowType::Drifting,
                other => return Err(TtsError::Weights(format!("unknown flow_type '{other}'"))),
            };
        }
        if let Some(m) = v.get("replace_characters").and_then(Value::as_object) {
            c.replace_characters = m
                .iter()
                .filter_map(|(k, v)| {
                    let mut cs = k.chars();
                    let ch = cs.next()?;
                    cs.next()
                        .is_none()
                        .then(|| (ch, v.as_str().unwrap_or("").to_string()))
                })
                .collect();
        }
        if c.ratios.is_empty() || c.ratios.contains(&0) || c.frame_rate <= 0.0 {
            return Err(TtsError::Weights("config.json: bad codec rates".into()));
        }
        Ok(c)
    }
}
