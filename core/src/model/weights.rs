use core::fmt::Write;

use trillim_kernels::formats::i2s_scale;
use trillim_kernels::WeightType;

use super::config::{Arch, Config, MAX_LAYERS};
use super::error::{name, ModelError, Name};
use crate::format::gguf::{ggml_type_name, Gguf, TensorInfo};

/// Where a weight matrix (or vector) lives in the model bytes, and how it is stored.
///
/// Offsets rather than slices keep [`Weights`] free of lifetimes, so a shell can own the
/// memory map and the layout side by side.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tensor {
    /// Byte offset of the data in the model bytes.
    pub offset: usize,
    /// Bytes of row data (without an I2_S scale tail).
    pub len: usize,
    /// Storage type.
    pub ty: WeightType,
    /// Number of rows (output features).
    pub rows: usize,
    /// Row length (input features).
    pub cols: usize,
    /// Factor applied to every output (I2_S tensor scale times an optional `.scale` tensor).
    pub scale: f32,
    /// Which buffer holds the data, and so how it is laid out.
    pub storage: Storage,
}

/// The buffer a tensor's data lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// The model file, in the file's layout.
    File,
    /// Weights the shell re-encoded at load into another type (rows as in the file).
    Aux,
    /// TQ1_0 weights the shell repacked into 16-row tiles
    /// (see [`trillim_kernels::ternary_tiles`]); `len / rows` is the tiled row size.
    Tiles,
}

/// The buffers tensors point into: the model file and what the shell built at load.
#[derive(Clone, Copy, Debug, Default)]
pub struct Buffers<'a> {
    /// Model bytes.
    pub file: &'a [u8],
    /// Re-encoded weights ([`Storage::Aux`]); empty if none.
    pub aux: &'a [u8],
    /// Tiled weights ([`Storage::Tiles`]); empty if none.
    pub tiles: &'a [u8],
}

impl<'a> Buffers<'a> {
    /// Just the model file.
    pub fn file(file: &'a [u8]) -> Buffers<'a> {
        Buffers {
            file,
            ..Buffers::default()
        }
    }
}

impl Tensor {
    /// Bytes of one row (of a tile's share of it for tiled tensors).
    pub fn row_bytes(&self) -> usize {
        self.len / self.rows
    }

    /// Rows `start..start + n` as a tensor of their own: a view of the same bytes (rows are
    /// contiguous in every weight format), so a fused matrix splits without a copy. `None` if
    /// the range is out of bounds or the tensor is not laid out in rows.
    pub fn row_range(&self, start: usize, n: usize) -> Option<Tensor> {
        if self.storage != Storage::File || n == 0 || start.checked_add(n)? > self.rows {
            return None;
        }
        // Row bytes without I2_S's per-tensor scale tail, which `scale` already holds.
        let rb = self.ty.row_bytes(self.cols)?;
        Some(Tensor {
            offset: self.offset + start * rb,
            len: n * rb,
            rows: n,
            ..*self
        })
    }

    /// The tensor's data within whichever of `b` holds it.
    pub fn data<'a>(&self, b: &Buffers<'a>) -> &'a [u8] {
        let src = match self.storage {
            Storage::File => b.file,
            Storage::Aux => b.aux,
            Storage::Tiles => b.tiles,
        };
        &src[self.offset..self.offset + self.len]
    }
}

/// The weights of one transformer block.
#[derive(Clone, Copy, Debug, PartialEq)]
#[allow(missing_docs)]
pub struct Layer {
    pub attn_norm: Tensor,
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    pub o: Tensor,
    pub ffn_norm: Tensor,
    pub gate: Tensor,
    pub up: Tensor,
    pub down: Tensor,
    pub attn_sub_norm: Option<Tensor>,
    pub ffn_sub_norm: Option<Tensor>,
    /// Biases added to the Q, K and V projections (Qwen 2).
    pub q_bias: Option<Tensor>,
    pub k_bias: Option<Tensor>,
    pub v_bias: Option<Tensor>,
    /// RMSNorm weights (`head_dim` long) of every query and key head before RoPE (Qwen 3).
    pub q_norm: Option<Tensor>,
    pub k_norm: Option<Tensor>,
    /// RMSNorm weights of the attention and FFN outputs before the residual add (Gemma).
    pub attn_post_norm: Option<Tensor>,
    pub ffn_post_norm: Option<Tensor>,
}

impl Layer {
    /// The seven projection matrices: q, k, v, o, gate, up, down.
    pub fn projections(&self) -> [&Tensor; 7] {
        [
            &self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down,
        ]
    }

    /// [`Layer::projections`], mutably.
    pub fn projections_mut(&mut self) -> [&mut Tensor; 7] {
        [
            &mut self.q,
            &mut self.k,
            &mut self.v,
            &mut self.o,
            &mut self.gate,
            &mut self.up,
            &mut self.down,
        ]
    }
}

/// Layout of all weights of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    /// Token embeddings (`n_vocab` rows of `d_model`).
    pub token_embd: Tensor,
    /// Final norm.
    pub output_norm: Tensor,
    /// Output projection (the embeddings when tied).
    pub output: Tensor,
    /// RoPE frequency divisors: Llama 3's `rope_freqs` or LongRoPE's `rope_factors_short`.
    pub rope_freqs: Option<Tensor>,
    /// LongRoPE's `rope_factors_long`, for contexts beyond [`Config::rope_orig_ctx`].
    pub rope_freqs_long: Option<Tensor>,
    /// Transformer blocks.
    pub layers: heapless::Vec<Layer, MAX_LAYERS>,
}

fn tensor_from(g: &Gguf<'_>, t: &TensorInfo<'_>) -> Result<Tensor, ModelError> {
    let ty = t.ty.ok_or_else(|| ModelError::UnsupportedType {
        tensor: name(t.name),
        type_name: ggml_type_name(t.type_id),
    })?;
    if t.n_dims > 2 {
        return Err(ModelError::BadShape(name(t.name)));
    }
    let n = t.n_elements() as usize;
    let len = ty
        .row_bytes(n)
        .ok_or_else(|| ModelError::BadShape(name(t.name)))?;
    let offset = t.data.as_ptr() as usize - g.bytes().as_ptr() as usize;
    let scale = if ty == WeightType::I2S {
        i2s_scale(t.data, n)
    } else {
        1.0
    };
    if !scale.is_finite() {
        return Err(ModelError::BadValue(name(t.name)));
    }
    Ok(Tensor {
        offset,
        len,
        ty,
        rows: t.n_rows(),
        cols: t.row_len(),
        scale,
        storage: Storage::File,
    })
}

struct Loader<'g, 'a> {
    g: &'g Gguf<'a>,
}

impl Loader<'_, '_> {
    fn find(&self, n: &str) -> Result<Option<Tensor>, ModelError> {
        match self.g.tensor(n) {
            None => Ok(None),
            Some(t) => tensor_from(self.g, &t).map(Some),
        }
    }

    fn req(&self, n: &str, rows: usize, cols: usize) -> Result<Tensor, ModelError> {
        let t = self
            .find(n)?
            .ok_or_else(|| ModelError::MissingTensor(name(n)))?;
        self.check(n, t, rows, cols)
    }

    fn opt(&self, n: &str, rows: usize, cols: usize) -> Result<Option<Tensor>, ModelError> {
        match self.find(n)? {
            None => Ok(None),
            Some(t) => self.check(n, t, rows, cols).map(Some),
        }
    }

    fn check(&self, n: &str, t: Tensor, rows: usize, cols: usize) -> Result<Tensor, ModelError> {
        if t.rows != rows || t.cols != cols {
            return Err(ModelError::BadShape(name(n)));
        }
        // Vectors (norms, scales) are read as f32.
        if rows == 1 && t.ty != WeightType::F32 {
            return Err(ModelError::UnsupportedType {
                tensor: name(n),
                type_name: t.ty.name(),
            });
        }
        Ok(t)
    }

    /// A projection with its optional `.scale` tensor folded into `scale`.
    fn proj(&self, prefix: &str, rows: usize, cols: usize) -> Result<Tensor, ModelError> {
        let mut n = Name::new();
        let _ = write!(n, "{prefix}.weight");
        let mut t = self.req(&n, rows, cols)?;
        n.clear();
        let _ = write!(n, "{prefix}.scale");
        if let Some(s) = self.opt(&n, 1, 1)? {
            let b = &self.g.bytes()[s.offset..s.offset + 4];
            let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if !v.is_finite() {
                return Err(ModelError::BadValue(n));
            }
            t.scale *= v;
        }
        Ok(t)
    }
}

fn blk(i: usize, s: &str) -> Name {
    let mut n = Name::new();
    let _ = write!(n, "blk.{i}.{s}");
    n
}

impl Weights {
    /// Finds and checks every tensor the configuration needs.
    pub fn from_gguf(g: &Gguf<'_>, c: &Config) -> Result<Weights, ModelError> {
        let l = Loader { g };
        let d = c.d_model;
        let token_embd = l.req("token_embd.weight", c.n_vocab, d)?;
        let output_norm = l.req("output_norm.weight", 1, d)?;
        let output = match l.opt("output.weight", c.n_vocab, d)? {
            Some(t) => t,
            None => token_embd,
        };
        // Llama 3's factors, or LongRoPE's short and long ones.
        let rope_freqs = match l.opt("rope_freqs.weight", 1, c.rope_dim / 2)? {
            Some(t) => Some(t),
            None => l.opt("rope_factors_short.weight", 1, c.rope_dim / 2)?,
        };
        let long = "rope_factors_long.weight";
        if g.tensor(long).is_some() && g.tensor("rope_factors_short.weight").is_none() {
            return Err(ModelError::UnsupportedFeature {
                found: name(long),
                feature: "LongRoPE long factors without the short ones",
            });
        }
        let rope_freqs_long = if c.rope_orig_ctx > 0 {
            l.opt(long, 1, c.rope_dim / 2)?
        } else {
            None
        };
        let mut layers = heapless::Vec::new();
        let bias = |i: usize, s: &str, n: usize| -> Result<Option<Tensor>, ModelError> {
            if c.qkv_bias {
                l.opt(&blk(i, s), 1, n)
            } else {
                Ok(None)
            }
        };
        let head_norm = |i: usize, s: &str| -> Result<Option<Tensor>, ModelError> {
            if c.qk_norm {
                l.req(&blk(i, s), 1, c.head_dim).map(Some)
            } else {
                Ok(None)
            }
        };
        let post_norm = |i: usize, s: &str| -> Result<Option<Tensor>, ModelError> {
            if c.post_norms {
                l.req(&blk(i, s), 1, d).map(Some)
            } else {
                Ok(None)
            }
        };
        let (qd, kvd, ff) = (c.q_dim(), c.kv_dim(), c.d_ff);
        for i in 0..c.n_layers {
            // Q, K and V fused into one matrix (rows: Q, then K, then V), as llama.cpp's
            // converter writes Phi-3 (which may also have them apart); separate matrices
            // otherwise.
            let fused_qkv = c.arch == Arch::Phi3 && g.tensor(&blk(i, "attn_qkv.weight")).is_some();
            let (q, k, v) = if fused_qkv {
                let n = blk(i, "attn_qkv.weight");
                let qkv = l.proj(&blk(i, "attn_qkv"), qd + 2 * kvd, d)?;
                let part = |start, rows| {
                    qkv.row_range(start, rows)
                        .ok_or(ModelError::BadShape(n.clone()))
                };
                (part(0, qd)?, part(qd, kvd)?, part(qd + kvd, kvd)?)
            } else {
                (
                    l.proj(&blk(i, "attn_q"), qd, d)?,
                    l.proj(&blk(i, "attn_k"), kvd, d)?,
                    l.proj(&blk(i, "attn_v"), kvd, d)?,
                )
            };
            // Phi-3 fuses the gate and up matrices into `ffn_up` (gate rows first).
            let (gate, up) = if c.arch == Arch::Phi3 {
                let n = blk(i, "ffn_up.weight");
                let fused = l.proj(&blk(i, "ffn_up"), 2 * ff, d)?;
                let part = |start| {
                    fused
                        .row_range(start, ff)
                        .ok_or(ModelError::BadShape(n.clone()))
                };
                (part(0)?, part(ff)?)
            } else {
                (
                    l.proj(&blk(i, "ffn_gate"), ff, d)?,
                    l.proj(&blk(i, "ffn_up"), ff, d)?,
                )
            };
            let layer = Layer {
                attn_norm: l.req(&blk(i, "attn_norm.weight"), 1, d)?,
                q,
                k,
                v,
                o: l.proj(&blk(i, "attn_output"), d, c.q_dim())?,
                ffn_norm: l.req(&blk(i, "ffn_norm.weight"), 1, d)?,
                gate,
                up,
                down: l.proj(&blk(i, "ffn_down"), d, c.d_ff)?,
                attn_sub_norm: if c.sub_norms {
                    Some(l.req(&blk(i, "attn_sub_norm.weight"), 1, c.q_dim())?)
                } else {
                    None
                },
                ffn_sub_norm: if c.sub_norms {
                    Some(l.req(&blk(i, "ffn_sub_norm.weight"), 1, c.d_ff)?)
                } else {
                    None
                },
                q_bias: bias(i, "attn_q.bias", c.q_dim())?,
                k_bias: bias(i, "attn_k.bias", c.kv_dim())?,
                v_bias: bias(i, "attn_v.bias", c.kv_dim())?,
                q_norm: head_norm(i, "attn_q_norm.weight")?,
                k_norm: head_norm(i, "attn_k_norm.weight")?,
                attn_post_norm: post_norm(i, "post_attention_norm.weight")?,
                ffn_post_norm: post_norm(i, "post_ffw_norm.weight")?,
            };
            layers
                .push(layer)
                .map_err(|_| ModelError::TooManyLayers(c.n_layers))?;
        }
        Ok(Weights {
            token_embd,
            output_norm,
            output,
            rope_freqs,
            rope_freqs_long,
            layers,
        })
    }

    /// Bytes of weights read to compute one token (every matrix once, plus one embedding row).
    pub fn bytes_per_token(&self) -> usize {
        let mut total = self.output.len + self.token_embd.row_bytes();
        for l in &self.layers {
            for t in l.projections() {
                total += t.len;
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::{Storage, Tensor};
    use trillim_kernels::WeightType;

    fn q8(rows: usize) -> Tensor {
        Tensor {
            offset: 1000,
            len: rows * 34 * 2,
            ty: WeightType::Q8_0,
            rows,
            cols: 64,
            scale: 0.5,
            storage: Storage::File,
        }
    }

    #[test]
    fn row_range_is_a_byte_range_of_the_rows() {
        let t = q8(10);
        let v = t.row_range(4, 3).unwrap();
        assert_eq!(
            (v.offset, v.len, v.rows, v.cols),
            (1000 + 4 * 68, 3 * 68, 3, 64)
        );
        assert_eq!((v.ty, v.scale, v.storage), (t.ty, t.scale, Storage::File));
        assert_eq!(t.row_range(0, 10), Some(t));
    }

    #[test]
    fn row_range_out_of_bounds_or_repacked_is_none() {
        let t = q8(10);
        assert_eq!(t.row_range(8, 3), None);
        assert_eq!(t.row_range(0, 0), None);
        assert_eq!(t.row_range(usize::MAX, 2), None);
        let tiled = Tensor {
            storage: Storage::Tiles,
            ..t
        };
        assert_eq!(tiled.row_range(0, 2), None);
    }
}
