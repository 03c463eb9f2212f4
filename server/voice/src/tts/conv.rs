//! Streaming 1-D convolutions of the Mimi codec on `[channels][time]` buffers: causal
//! convolutions that carry their left context from call to call, and transposed convolutions
//! that carry the overlapping tail of their output, so decoding frame by frame gives exactly
//! the samples decoding everything at once would.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};
use trillim_core::Parallel;

use super::weights::Tensors;
use super::TtsError;

/// A causal convolution (`StreamingConv1d`, constant padding).
#[derive(Debug)]
pub struct Conv1d {
    /// `[cout][cin · k]`.
    w: Vec<f32>,
    b: Option<Vec<f32>>,
    pub cin: usize,
    pub cout: usize,
    k: usize,
    stride: usize,
    dilation: usize,
}

/// A transposed convolution (`StreamingConvTranspose1d`, one group).
#[derive(Debug)]
pub struct ConvTr1d {
    /// `[cout · k][cin]`: the kernel transposed for one matrix product per call.
    wt: Vec<f32>,
    b: Option<Vec<f32>>,
    pub cin: usize,
    pub cout: usize,
    k: usize,
    stride: usize,
}

/// A depthwise transposed convolution without bias (`ConvTrUpsample1d`).
#[derive(Debug)]
pub struct DepthwiseTr1d {
    /// `[channels][k]`.
    w: Vec<f32>,
    pub channels: usize,
    k: usize,
    stride: usize,
}

impl Conv1d {
    pub fn load(
        t: &mut Tensors,
        name: &str,
        stride: usize,
        dilation: usize,
        bias: bool,
    ) -> Result<Conv1d, TtsError> {
        let (shape, w) = t.take_any(&format!("{name}.weight"))?;
        let [cout, cin, k] = shape[..] else {
            return Err(TtsError::Weights(format!(
                "{name}.weight is not a 1-D kernel"
            )));
        };
        if k == 0 || stride == 0 || (k - 1) * dilation + 1 < stride {
            return Err(TtsError::Weights(format!(
                "{name}: kernel {k} does not fit stride {stride}"
            )));
        }
        let b = if bias {
            Some(t.take(&format!("{name}.bias"), &[cout])?)
        } else {
            None
        };
        Ok(Conv1d {
            w,
            b,
            cin,
            cout,
            k,
            stride,
            dilation,
        })
    }

    /// The stride.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Left context carried between calls, per input channel.
    pub fn state_len(&self) -> usize {
        (self.k - 1) * self.dilation + 1 - self.stride
    }

    /// `x` is `[cin][t]` with `t` a multiple of the stride; returns `[cout][t / stride]`.
    pub fn forward(
        &self,
        par: &dyn Parallel,
        x: &[f32],
        t: usize,
        prev: &mut Vec<f32>,
    ) -> Vec<f32> {
        let tp = self.state_len();
        if prev.len() != self.cin * tp {
            *prev = vec![0.0; self.cin * tp];
        }
        let total = tp + t;
        let tout = t / self.stride;
        let ck = self.cin * self.k;
        // im2col: cols[(ci·k + j)][o] = padded[ci][o·stride + j·dilation].
        let mut cols = vec![0f32; ck * tout];
        let mut padded = vec![0f32; total];
        for ci in 0..self.cin {
            padded[..tp].copy_from_slice(&prev[ci * tp..(ci + 1) * tp]);
            padded[tp..].copy_from_slice(&x[ci * t..(ci + 1) * t]);
            for j in 0..self.k {
                let row = &mut cols[(ci * self.k + j) * tout..(ci * self.k + j + 1) * tout];
                for (o, c) in row.iter_mut().enumerate() {
                    *c = padded[o * self.stride + j * self.dilation];
                }
            }
            prev[ci * tp..(ci + 1) * tp].copy_from_slice(&padded[total - tp..]);
        }
        let mut y = vec![0f32; self.cout * tout];
        if tout == 0 {
            return y;
        }
        let rows = self.cout.div_ceil(par.threads().max(1)).max(1);
        let colsv = ArrayView2::from_shape((ck, tout), &cols[..]).expect("im2col view");
        par.for_each_chunk(&mut y, rows * tout, &|i, chunk| {
            let r = chunk.len() / tout;
            let w = ArrayView2::from_shape((r, ck), &self.w[i * rows * ck..(i * rows + r) * ck])
                .expect("kernel view");
            let mut out = ArrayViewMut2::from_shape((r, tout), chunk).expect("output view");
            general_mat_mul(1.0, &w, &colsv, 0.0, &mut out);
            if let Some(b) = &self.b {
                for (k, row) in chunk.chunks_exact_mut(tout).enumerate() {
                    let bias = b[i * rows + k];
                    row.iter_mut().for_each(|v| *v += bias);
                }
            }
        });
        y
    }
}

impl ConvTr1d {
    pub fn load(t: &mut Tensors, name: &str, stride: usize) -> Result<ConvTr1d, TtsError> {
        let (shape, w) = t.take_any(&format!("{name}.weight"))?;
        let [cin, cout, k] = shape[..] else {
            return Err(TtsError::Weights(format!(
                "{name}.weight is not a 1-D kernel"
            )));
        };
        if k < stride || stride == 0 {
            return Err(TtsError::Weights(format!(
                "{name}: kernel {k} is shorter than stride {stride}"
            )));
        }
        let mut wt = vec![0f32; cout * k * cin];
        for ci in 0..cin {
            for co in 0..cout {
                for j in 0..k {
                    wt[(co * k + j) * cin + ci] = w[(ci * cout + co) * k + j];
                }
            }
        }
        let b = Some(t.take(&format!("{name}.bias"), &[cout])?);
        Ok(ConvTr1d {
            wt,
            b,
            cin,
            cout,
            k,
            stride,
        })
    }

    /// `x` is `[cin][t]`; returns `[cout][t · stride]`, keeping the overlap in `partial`.
    pub fn forward(
        &self,
        par: &dyn Parallel,
        x: &[f32],
        t: usize,
        partial: &mut Vec<f32>,
    ) -> Vec<f32> {
        let (k, s, cout) = (self.k, self.stride, self.cout);
        let pt = k - s;
        if partial.len() != cout * pt {
            *partial = vec![0.0; cout * pt];
        }
        let mut z = vec![0f32; cout * k * t];
        let rows_total = cout * k;
        let rows = rows_total.div_ceil(par.threads().max(1)).max(1);
        let xv = ArrayView2::from_shape((self.cin, t), x).expect("input view");
        par.for_each_chunk(&mut z, rows * t, &|i, chunk| {
            let r = chunk.len() / t;
            let w = ArrayView2::from_shape(
                (r, self.cin),
                &self.wt[i * rows * self.cin..(i * rows + r) * self.cin],
            )
            .expect("kernel view");
            let mut out = ArrayViewMut2::from_shape((r, t), chunk).expect("output view");
            general_mat_mul(1.0, &w, &xv, 0.0, &mut out);
        });
        let full = (t - 1) * s + k;
        let out_len = t * s;
        let mut y = vec![0f32; cout * out_len];
        let mut tail = vec![0f32; full];
        for co in 0..cout {
            tail.fill(0.0);
            for j in 0..k {
                let zr = &z[(co * k + j) * t..(co * k + j + 1) * t];
                for (ti, v) in zr.iter().enumerate() {
                    tail[ti * s + j] += v;
                }
            }
            let bias = self.b.as_ref().map_or(0.0, |b| b[co]);
            for v in tail.iter_mut() {
                *v += bias;
            }
            let p = &mut partial[co * pt..(co + 1) * pt];
            for (v, q) in tail[..pt].iter_mut().zip(p.iter()) {
                *v += q;
            }
            for (q, v) in p.iter_mut().zip(&tail[full - pt..]) {
                *q = v - bias;
            }
            y[co * out_len..(co + 1) * out_len].copy_from_slice(&tail[..out_len]);
        }
        y
    }
}

impl DepthwiseTr1d {
    pub fn load(t: &mut Tensors, name: &str, stride: usize) -> Result<DepthwiseTr1d, TtsError> {
        let (shape, w) = t.take_any(&format!("{name}.weight"))?;
        let [channels, 1, k] = shape[..] else {
            return Err(TtsError::Weights(format!(
                "{name}.weight is not a depthwise kernel"
            )));
        };
        if k < stride || stride == 0 {
            return Err(TtsError::Weights(format!(
                "{name}: kernel {k} is shorter than stride {stride}"
            )));
        }
        Ok(DepthwiseTr1d {
            w,
            channels,
            k,
            stride,
        })
    }

    /// `x` is `[channels][t]`; returns `[channels][t · stride]`.
    pub fn forward(&self, x: &[f32], t: usize, partial: &mut Vec<f32>) -> Vec<f32> {
        let (k, s, c) = (self.k, self.stride, self.channels);
        let pt = k - s;
        if partial.len() != c * pt {
            *partial = vec![0.0; c * pt];
        }
        let full = (t - 1) * s + k;
        let out_len = t * s;
        let mut y = vec![0f32; c * out_len];
        let mut tail = vec![0f32; full];
        for ch in 0..c {
            tail.fill(0.0);
            let w = &self.w[ch * k..(ch + 1) * k];
            for ti in 0..t {
                let xv = x[ch * t + ti];
                for (j, wv) in w.iter().enumerate() {
                    tail[ti * s + j] += wv * xv;
                }
            }
            let p = &mut partial[ch * pt..(ch + 1) * pt];
            for (v, q) in tail[..pt].iter_mut().zip(p.iter()) {
                *v += q;
            }
            p.copy_from_slice(&tail[full - pt..]);
            y[ch * out_len..(ch + 1) * out_len].copy_from_slice(&tail[..out_len]);
        }
        y
    }
}
