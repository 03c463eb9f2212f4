//! The tensors of a pocket-tts safetensors file, converted to f32 and taken out by name with
//! their shapes checked, so a file with a missing or misshapen tensor is refused at load.

use std::collections::HashMap;

use trillim_runtime::safetensors::{self, Dtype};

use super::TtsError;

/// Tensors by name: shape and f32 values (integers are kept apart).
#[derive(Debug, Default)]
pub struct Tensors {
    floats: HashMap<String, (Vec<usize>, Vec<f32>)>,
    ints: HashMap<String, (Vec<usize>, Vec<i64>)>,
}

impl Tensors {
    /// Parses a safetensors buffer; F16 and BF16 are widened to f32.
    pub fn parse(what: &str, buf: &[u8]) -> Result<Tensors, TtsError> {
        let views =
            safetensors::parse(buf).map_err(|e| TtsError::Weights(format!("{what}: {e}")))?;
        let mut t = Tensors::default();
        for v in views {
            let d = v.data;
            match v.dtype {
                Dtype::I64 => {
                    let vals = d
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                        .collect();
                    t.ints.insert(v.name, (v.shape, vals));
                }
                dt => {
                    let vals: Vec<f32> = match dt {
                        Dtype::F32 => d
                            .chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect(),
                        Dtype::F16 => d
                            .chunks_exact(2)
                            .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                            .collect(),
                        _ => d
                            .chunks_exact(2)
                            .map(|c| {
                                f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)
                            })
                            .collect(),
                    };
                    t.floats.insert(v.name, (v.shape, vals));
                }
            }
        }
        Ok(t)
    }

    /// Whether a float tensor of that name exists.
    pub fn has(&self, name: &str) -> bool {
        self.floats.contains_key(name)
    }

    /// The shape of a float tensor, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.floats.get(name).map(|(s, _)| s.as_slice())
    }

    /// Takes a float tensor out, checking its shape.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, TtsError> {
        let (s, v) = self
            .floats
            .remove(name)
            .ok_or_else(|| TtsError::Weights(format!("tensor '{name}' is missing")))?;
        if s != shape {
            return Err(TtsError::Weights(format!(
                "tensor '{name}' has shape {s:?}, expected {shape:?}"
            )));
        }
        Ok(v)
    }

    /// Takes a float tensor out whatever its shape.
    pub fn take_any(&mut self, name: &str) -> Result<(Vec<usize>, Vec<f32>), TtsError> {
        self.floats
            .remove(name)
            .ok_or_else(|| TtsError::Weights(format!("tensor '{name}' is missing")))
    }

    /// An integer tensor, if present.
    pub fn int(&self, name: &str) -> Option<&(Vec<usize>, Vec<i64>)> {
        self.ints.get(name)
    }

    /// Names of the float tensors, for discovery (layer counts).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.floats.keys().map(|s| s.as_str())
    }
}

/// IEEE binary16 to f32.
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if man == 0 => sign,
        0 => {
            // Subnormal: renormalize.
            let mut e = 127 - 15 + 1;
            let mut m = man;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((m & 0x3ff) << 13)
        }
        0x1f => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::f16_to_f32;

    #[test]
    fn half_floats() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
    }
}
