//! The FlowLM: a causal transformer over text-token embeddings and audio latents, whose last
//! output conditions a small MLP flow head (adaLN residual blocks, time-step embeddings) that
//! turns Gaussian noise into the next 32-dimensional Mimi latent in one (or a few) steps of
//! Lagrangian self-distillation, plus a one-logit end-of-speech head.

use trillim_core::Parallel;

use super::config::{FlowType, TtsConfig};
use super::nn::{layer_norm, linear, rms_norm, silu, Linear, Norm};
use super::transformer::{Dims, KvCache, Transformer};
use super::weights::Tensors;
use super::TtsError;

#[derive(Debug)]
struct TimeEmbed {
    freqs: Vec<f32>,
    l0: Linear,
    l2: Linear,
    alpha: Vec<f32>,
}

#[derive(Debug)]
struct ResBlock {
    in_ln: Norm,
    mlp0: Linear,
    mlp2: Linear,
    ada: Linear,
}

/// The flow head (`SimpleMLPAdaLN`).
#[derive(Debug)]
struct FlowNet {
    c: usize,
    time: Vec<TimeEmbed>,
    cond: Linear,
    input: Linear,
    blocks: Vec<ResBlock>,
    final_ada: Linear,
    final_linear: Linear,
}

/// The FlowLM with its text table and heads.
#[derive(Debug)]
pub struct FlowLm {
    pub d: usize,
    pub ldim: usize,
    embed: Vec<f32>,
    embed_proj: Option<Linear>,
    n_embed: usize,
    pub emb_std: Vec<f32>,
    pub emb_mean: Vec<f32>,
    bos: Vec<f32>,
    /// The learnt position put before a cloned voice's conditioning.
    pub bos_before_voice: Option<Vec<f32>>,
    /// Mimi latent (encoder side) to FlowLM width, for voice cloning.
    pub speaker_proj: Option<Linear>,
    input_linear: Linear,
    pub transformer: Transformer,
    out_norm: Norm,
    z_proj: Option<Linear>,
    out_eos: Linear,
    flow: FlowNet,
    flow_type: FlowType,
    decode_steps: usize,
}

/// One generated frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The latent (normalized space, what the FlowLM reads back).
    pub latent: Vec<f32>,
    /// The end-of-speech logit.
    pub eos_logit: f32,
}

impl FlowLm {
    pub fn load(t: &mut Tensors, cfg: &TtsConfig) -> Result<FlowLm, TtsError> {
        let f = "flow_lm";
        let (emb_shape, embed) = t.take_any(&format!("{f}.conditioner.embed.weight"))?;
        let [n_embed, ew] = emb_shape[..] else {
            return Err(TtsError::Weights("the text table is not a matrix".into()));
        };
        let (d, ldim) = match t.shape(&format!("{f}.input_linear.weight")) {
            Some(&[d, l]) => (d, l),
            _ => {
                return Err(TtsError::Weights(
                    "flow_lm.input_linear.weight is missing".into(),
                ))
            }
        };
        let embed_proj = if ew != d {
            Some(linear(t, &format!("{f}.conditioner.proj"), d, ew, false)?)
        } else {
            None
        };
        let layers = count(t, &format!("{f}.transformer.layers."));
        let attn_dim = cfg.attn_dim.unwrap_or(d);
        let kv_heads = cfg.kv_heads.unwrap_or(cfg.num_heads);
        let hd = attn_dim / cfg.num_heads.max(1);
        let qkv = t
            .shape(&format!(
                "{f}.transformer.layers.0.self_attn.in_proj.weight"
            ))
            .map(|s| s[0]);
        if cfg.num_heads == 0
            || !attn_dim.is_multiple_of(cfg.num_heads)
            || qkv != Some(attn_dim + 2 * hd * kv_heads)
        {
            return Err(TtsError::Weights(format!(
                "the FlowLM attention does not fit {} heads of width {attn_dim}",
                cfg.num_heads
            )));
        }
        let ff = t
            .shape(&format!("{f}.transformer.layers.0.linear1.weight"))
            .map_or(0, |s| s[0]);
        let dims = Dims {
            d_model: d,
            heads: cfg.num_heads,
            kv_heads,
            attn_dim,
            ff,
            layers,
            max_period: cfg.max_period,
            context: None,
            layer_scale: false,
        };
        let transformer = Transformer::load(t, &format!("{f}.transformer"), dims)?;
        let z_proj = if t.has(&format!("{f}.z_proj.weight")) {
            let z = t.shape(&format!("{f}.z_proj.weight")).map_or(0, |s| s[0]);
            Some(linear(t, &format!("{f}.z_proj"), z, d, false)?)
        } else {
            None
        };
        let zd = z_proj.as_ref().map_or(d, |z| z.n_out);
        let bos_before_voice = if t.has(&format!("{f}.bos_before_voice")) {
            Some(t.take(&format!("{f}.bos_before_voice"), &[1, 1, d])?)
        } else {
            None
        };
        let speaker_proj = match t.shape(&format!("{f}.speaker_proj_weight")) {
            Some(&[o, i]) if o == d => Some(super::nn::linear_from(
                t,
                &format!("{f}.speaker_proj_weight"),
                "",
                d,
                i,
                false,
            )?),
            _ => None,
        };
        let flow = FlowNet::load(t, &format!("{f}.flow_net"), ldim, zd, cfg.flow_type)?;
        Ok(FlowLm {
            d,
            ldim,
            embed,
            embed_proj,
            n_embed,
            emb_std: t.take(&format!("{f}.emb_std"), &[ldim])?,
            emb_mean: t.take(&format!("{f}.emb_mean"), &[ldim])?,
            bos: t.take(&format!("{f}.bos_emb"), &[ldim])?,
            bos_before_voice,
            speaker_proj,
            input_linear: linear(t, &format!("{f}.input_linear"), d, ldim, false)?,
            transformer,
            out_norm: Norm::load(t, &format!("{f}.out_norm"), d, 1e-5)?,
            z_proj,
            out_eos: linear(t, &format!("{f}.out_eos"), 1, zd, true)?,
            flow,
            flow_type: cfg.flow_type,
            decode_steps: 1,
        })
    }

    /// Runs text tokens through the transformer (filling the cache; the output is unused).
    pub fn prompt_text(&self, par: &dyn Parallel, tokens: &[u32], cache: &mut KvCache) {
        if tokens.is_empty() {
            return;
        }
        let ew = self.embed.len() / self.n_embed;
        let mut rows = Vec::with_capacity(tokens.len() * ew);
        for &tok in tokens {
            let i = (tok as usize).min(self.n_embed - 1);
            rows.extend_from_slice(&self.embed[i * ew..(i + 1) * ew]);
        }
        let mut x = match &self.embed_proj {
            Some(p) => {
                let mut y = vec![0f32; tokens.len() * self.d];
                p.forward(par, &rows, tokens.len(), &mut y);
                y
            }
            None => rows,
        };
        self.transformer.forward(par, &mut x, tokens.len(), cache);
    }

    /// Runs conditioning rows (`[n][d]`, e.g. a cloned voice) through the transformer.
    pub fn prompt_rows(&self, par: &dyn Parallel, rows: &mut [f32], n: usize, cache: &mut KvCache) {
        self.transformer.forward(par, rows, n, cache);
    }

    /// One autoregressive step: reads the previous latent (`None` is the start) and returns
    /// the next, sampled from `noise` (already scaled by √temperature).
    pub fn step(
        &self,
        par: &dyn Parallel,
        prev: Option<&[f32]>,
        noise: &[f32],
        cache: &mut KvCache,
    ) -> Frame {
        let input = prev.unwrap_or(&self.bos);
        let mut x = vec![0f32; self.d];
        self.input_linear.forward(par, input, 1, &mut x);
        self.transformer.forward(par, &mut x, 1, cache);
        let mut h = vec![0f32; self.d];
        self.out_norm.apply(&x, &mut h);
        let h = match &self.z_proj {
            Some(z) => {
                let mut y = vec![0f32; z.n_out];
                z.forward(par, &h, 1, &mut y);
                y
            }
            None => h,
        };
        let mut eos = [0f32];
        self.out_eos.forward(par, &h, 1, &mut eos);
        let latent = self.decode(par, &h, noise);
        Frame {
            latent,
            eos_logit: eos[0],
        }
    }

    /// The flow head's sampler for this model's flow type.
    fn decode(&self, par: &dyn Parallel, c: &[f32], x0: &[f32]) -> Vec<f32> {
        match self.flow_type {
            FlowType::Lsd => {
                let n = self.decode_steps.max(1);
                let mut cur = x0.to_vec();
                for i in 0..n {
                    let s = i as f32 / n as f32;
                    let t = (i + 1) as f32 / n as f32;
                    let v = self.flow.forward(par, c, &[s, t], &cur);
                    for (x, v) in cur.iter_mut().zip(v) {
                        *x += v / n as f32;
                    }
                }
                cur
            }
            FlowType::FlowMatching => {
                let n = self.decode_steps.max(16);
                let mut cur = x0.to_vec();
                for i in 0..n {
                    let t = i as f32 / n as f32;
                    let v = self.flow.forward(par, c, &[t], &cur);
                    for (x, v) in cur.iter_mut().zip(v) {
                        *x += v / n as f32;
                    }
                }
                cur
            }
            FlowType::Pointwise => {
                let v = self.flow.forward(par, c, &[], x0);
                x0.iter().zip(v).map(|(a, b)| a + b).collect()
            }
            FlowType::Drifting => self.flow.forward(par, c, &[], x0),
        }
    }
}

/// Number of `prefix<N>.` layers present.
pub fn count(t: &Tensors, prefix: &str) -> usize {
    t.names()
        .filter_map(|n| {
            n.strip_prefix(prefix)?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .map(|i| i + 1)
        .max()
        .unwrap_or(0)
}

impl FlowNet {
    fn load(
        t: &mut Tensors,
        p: &str,
        ldim: usize,
        cond: usize,
        ty: FlowType,
    ) -> Result<FlowNet, TtsError> {
        let c = t
            .shape(&format!("{p}.input_proj.weight"))
            .map(|s| s[0])
            .ok_or_else(|| TtsError::Weights(format!("{p}.input_proj.weight is missing")))?;
        let n_time = match ty {
            FlowType::Lsd => 2,
            FlowType::FlowMatching => 1,
            FlowType::Pointwise | FlowType::Drifting => 0,
        };
        let mut time = Vec::new();
        for k in 0..n_time {
            let te = format!("{p}.time_embed.{k}");
            let (_, freqs) = t.take_any(&format!("{te}.freqs"))?;
            let fe = 2 * freqs.len();
            time.push(TimeEmbed {
                l0: linear(t, &format!("{te}.mlp.0"), c, fe, true)?,
                l2: linear(t, &format!("{te}.mlp.2"), c, c, true)?,
                alpha: t.take(&format!("{te}.mlp.3.alpha"), &[c])?,
                freqs,
            });
        }
        let depth = count(t, &format!("{p}.res_blocks."));
        let mut blocks = Vec::with_capacity(depth);
        for b in 0..depth {
            let rb = format!("{p}.res_blocks.{b}");
            blocks.push(ResBlock {
                in_ln: Norm::load(t, &format!("{rb}.in_ln"), c, 1e-6)?,
                mlp0: linear(t, &format!("{rb}.mlp.0"), c, c, true)?,
                mlp2: linear(t, &format!("{rb}.mlp.2"), c, c, true)?,
                ada: linear(t, &format!("{rb}.adaLN_modulation.1"), 3 * c, c, true)?,
            });
        }
        Ok(FlowNet {
            c,
            time,
            cond: linear(t, &format!("{p}.cond_embed"), c, cond, true)?,
            input: linear(t, &format!("{p}.input_proj"), c, ldim, true)?,
            blocks,
            final_ada: linear(
                t,
                &format!("{p}.final_layer.adaLN_modulation.1"),
                2 * c,
                c,
                true,
            )?,
            final_linear: linear(t, &format!("{p}.final_layer.linear"), ldim, c, true)?,
        })
    }

    /// The velocity at `x` for condition `cond` and the time conditions `ts`.
    fn forward(&self, par: &dyn Parallel, cond: &[f32], ts: &[f32], x: &[f32]) -> Vec<f32> {
        let c = self.c;
        let mut h = vec![0f32; c];
        self.input.forward(par, x, 1, &mut h);
        let mut y = vec![0f32; c];
        self.cond.forward(par, cond, 1, &mut y);
        if !ts.is_empty() {
            let mut sum = vec![0f32; c];
            for (te, &t) in self.time.iter().zip(ts) {
                let mut emb: Vec<f32> = te.freqs.iter().map(|f| (t * f).cos()).collect();
                emb.extend(te.freqs.iter().map(|f| (t * f).sin()));
                let mut a = vec![0f32; c];
                te.l0.forward(par, &emb, 1, &mut a);
                silu(&mut a);
                let mut b = vec![0f32; c];
                te.l2.forward(par, &a, 1, &mut b);
                rms_norm(&mut b, &te.alpha, 1e-5);
                for (s, v) in sum.iter_mut().zip(&b) {
                    *s += v;
                }
            }
            for (y, s) in y.iter_mut().zip(&sum) {
                *y += s / ts.len() as f32;
            }
        }
        let mut ys = y.clone();
        silu(&mut ys);
        let mut mod3 = vec![0f32; 3 * c];
        let mut n = vec![0f32; c];
        let mut m = vec![0f32; c];
        let mut o = vec![0f32; c];
        for b in &self.blocks {
            b.ada.forward(par, &ys, 1, &mut mod3);
            let (shift, rest) = mod3.split_at(c);
            let (scale, gate) = rest.split_at(c);
            b.in_ln.apply(&h, &mut n);
            for ((v, sh), sc) in n.iter_mut().zip(shift).zip(scale) {
                *v = *v * (1.0 + sc) + sh;
            }
            b.mlp0.forward(par, &n, 1, &mut m);
            silu(&mut m);
            b.mlp2.forward(par, &m, 1, &mut o);
            for ((h, g), o) in h.iter_mut().zip(gate).zip(&o) {
                *h += g * o;
            }
        }
        let mut mod2 = vec![0f32; 2 * c];
        self.final_ada.forward(par, &ys, 1, &mut mod2);
        let (shift, scale) = mod2.split_at(c);
        layer_norm(&h, None, 1e-6, c, &mut n);
        for ((v, sh), sc) in n.iter_mut().zip(shift).zip(scale) {
            *v = *v * (1.0 + sc) + sh;
        }
        let mut out = vec![0f32; self.final_linear.n_out];
        self.final_linear.forward(par, &n, 1, &mut out);
        out
    }
}
