//! Reader for CTranslate2's `model.bin` (binary version 6 and earlier ones with the same
//! variable table), the format of `Systran/faster-whisper-*` checkpoints.
//!
//! Layout, little-endian: `u32` version; (version ≥ 2) the spec name as a string; (≥ 4) a `u32`
//! spec revision; `u32` variable count, then per variable its name, `u8` rank, `u32` per
//! dimension, (≥ 4) a `u8` data type, `u32` byte count and the bytes; (≥ 3) `u32` alias count
//! and alias/target name pairs. A string is a `u16` length (counting a trailing NUL) and the
//! bytes. [`Ct2Model::parse`] checks every length against the buffer before it is used, so the
//! views it hands out are in bounds.

use std::collections::HashMap;

/// Why a `model.bin` could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Ct2Error {
    #[error("model.bin ends early (needed {needed} bytes at offset {at}, file has {len})")]
    Truncated {
        at: usize,
        needed: usize,
        len: usize,
    },
    #[error("model.bin binary version {0} is not supported (1 to 6 are)")]
    Version(u32),
    #[error("model.bin holds a name that is not UTF-8")]
    Name,
    #[error("variable `{name}`: data type {dtype} is not known")]
    DataType { name: String, dtype: u8 },
    #[error("variable `{name}`: shape {shape:?} does not match its {bytes} bytes")]
    Shape {
        name: String,
        shape: Vec<usize>,
        bytes: usize,
    },
    #[error("variable `{0}` is missing")]
    Missing(String),
    #[error("variable `{name}` has shape {got:?}, expected {want:?}")]
    WrongShape {
        name: String,
        got: Vec<usize>,
        want: Vec<usize>,
    },
    #[error("variable `{name}` is {dtype:?}, which cannot be read as {wanted}")]
    WrongType {
        name: String,
        dtype: DataType,
        wanted: &'static str,
    },
}

/// Element types a variable can be stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    F32,
    I8,
    I16,
    I32,
    F16,
    Bf16,
}

impl DataType {
    fn from_code(code: u8) -> Option<DataType> {
        Some(match code {
            0 => DataType::F32,
            1 => DataType::I8,
            2 => DataType::I16,
            3 => DataType::I32,
            4 => DataType::F16,
            5 => DataType::Bf16,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DataType::I8 => 1,
            DataType::I16 | DataType::F16 | DataType::Bf16 => 2,
            DataType::F32 | DataType::I32 => 4,
        }
    }
}

/// One variable's place in the file.
#[derive(Debug, Clone)]
pub struct Variable {
    pub shape: Vec<usize>,
    pub dtype: DataType,
    /// Byte range of the data within the buffer given to [`Ct2Model::parse`].
    pub offset: usize,
    pub len: usize,
}

/// The variable table of a `model.bin`, as offsets into the caller's buffer.
#[derive(Debug, Clone)]
pub struct Ct2Model {
    pub version: u32,
    pub spec: String,
    pub revision: u32,
    variables: HashMap<String, Variable>,
    aliases: HashMap<String, String>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Ct2Error> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(Ct2Error::Truncated {
                at: self.at,
                needed: n,
                len: self.buf.len(),
            })?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, Ct2Error> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Ct2Error> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, Ct2Error> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Result<String, Ct2Error> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        let b = b.strip_suffix(&[0]).unwrap_or(b);
        String::from_utf8(b.to_vec()).map_err(|_| Ct2Error::Name)
    }
}

impl Ct2Model {
    /// Walks the header and variable table of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Ct2Model, Ct2Error> {
        let mut c = Cursor { buf, at: 0 };
        let version = c.u32()?;
        if !(1..=6).contains(&version) {
            return Err(Ct2Error::Version(version));
        }
        let spec = if version >= 2 {
            c.string()?
        } else {
            String::new()
        };
        let revision = if version >= 4 { c.u32()? } else { 1 };
        let count = c.u32()? as usize;
        // Each variable takes at least 8 bytes, so a lying count fails before it allocates.
        let mut variables = HashMap::with_capacity(count.min(buf.len() / 8));
        for _ in 0..count {
            let name = c.string()?;
            let rank = c.u8()? as usize;
            let mut shape = Vec::with_capacity(rank);
            for _ in 0..rank {
                shape.push(c.u32()? as usize);
            }
            let (dtype, len) = if version >= 4 {
                let code = c.u8()?;
                let dtype = DataType::from_code(code).ok_or_else(|| Ct2Error::DataType {
                    name: name.clone(),
                    dtype: code,
                })?;
                (dtype, c.u32()? as usize)
            } else {
                // Before version 4 the type is implied by the element size.
                let size = c.u8()?;
                let dtype = match size {
                    1 => DataType::I8,
                    2 => DataType::I16,
                    4 => DataType::F32,
                    _ => {
                        return Err(Ct2Error::DataType {
                            name: name.clone(),
                            dtype: size,
                        })
                    }
                };
                let elems = c.u32()? as usize;
                (dtype, elems.saturating_mul(size as usize))
            };
            let elems = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
            if elems.and_then(|e| e.checked_mul(dtype.size())) != Some(len) {
                return Err(Ct2Error::Shape {
                    name,
                    shape,
                    bytes: len,
                });
            }
            let offset = c.at;
            c.take(len)?;
            variables.insert(
                name,
                Variable {
                    shape,
                    dtype,
                    offset,
                    len,
                },
            );
        }
        let mut aliases = HashMap::new();
        if version >= 3 {
            let n = c.u32()? as usize;
            for _ in 0..n {
                let alias = c.string()?;
                let target = c.string()?;
                aliases.insert(alias, target);
            }
        }
        Ok(Ct2Model {
            version,
            spec,
            revision,
            variables,
            aliases,
        })
    }

    /// The variable `name`, following one alias.
    pub fn get(&self, name: &str) -> Result<&Variable, Ct2Error> {
        self.variables
            .get(name)
            .or_else(|| self.aliases.get(name).and_then(|t| self.variables.get(t)))
            .ok_or_else(|| Ct2Error::Missing(name.to_string()))
    }

    /// Whether `name` (or an alias of that name) exists.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_ok()
    }

    /// Number of variables in the table (aliases not counted).
    pub fn len(&self) -> usize {
        self.variables.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.variables.is_empty()
    }

    /// `name` as f32 values (f32, f16 and bf16 variables), checked against `shape`.
    pub fn f32s(&self, buf: &[u8], name: &str, shape: &[usize]) -> Result<Vec<f32>, Ct2Error> {
        let v = self.get(name)?;
        if v.shape != shape {
            return Err(Ct2Error::WrongShape {
                name: name.to_string(),
                got: v.shape.clone(),
                want: shape.to_vec(),
            });
        }
        let bytes = &buf[v.offset..v.offset + v.len];
        Ok(match v.dtype {
            DataType::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            DataType::F16 => bytes
                .chunks_exact(2)
                .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            DataType::Bf16 => bytes
                .chunks_exact(2)
                .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
                .collect(),
            dtype => {
                return Err(Ct2Error::WrongType {
                    name: name.to_string(),
                    dtype,
                    wanted: "floats",
                })
            }
        })
    }

    /// A scalar integer variable (such as `encoder/num_heads`).
    pub fn int(&self, buf: &[u8], name: &str) -> Result<i64, Ct2Error> {
        let v = self.get(name)?;
        let b = &buf[v.offset..v.offset + v.len];
        let wrong = || Ct2Error::WrongType {
            name: name.to_string(),
            dtype: v.dtype,
            wanted: "one integer",
        };
        if v.len != v.dtype.size() {
            return Err(wrong());
        }
        Ok(match v.dtype {
            DataType::I8 => b[0] as i8 as i64,
            DataType::I16 => i16::from_le_bytes([b[0], b[1]]) as i64,
            DataType::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            _ => return Err(wrong()),
        })
    }
}

/// IEEE half to single precision (exact: every f16 is an f32).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalize into an f32 exponent.
            let shift = f.leading_zeros() - 21;
            let f = (f << shift) & 0x3ff;
            sign | ((113 - shift) << 23) | (f << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    fn sample() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&6u32.to_le_bytes());
        string(&mut b, "TestSpec");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        string(&mut b, "w");
        b.push(2);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.push(4);
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&0x3c00u16.to_le_bytes()); // 1.0
        b.extend_from_slice(&0xc000u16.to_le_bytes()); // -2.0
        string(&mut b, "heads");
        b.push(0);
        b.push(2);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&6i16.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        string(&mut b, "alias");
        string(&mut b, "w");
        b
    }

    #[test]
    fn reads_variables_and_aliases() {
        let b = sample();
        let m = Ct2Model::parse(&b).unwrap();
        assert_eq!(m.spec, "TestSpec");
        assert_eq!(m.revision, 3);
        assert_eq!(m.f32s(&b, "alias", &[2, 1]).unwrap(), vec![1.0, -2.0]);
        assert_eq!(m.int(&b, "heads").unwrap(), 6);
        assert!(matches!(
            m.f32s(&b, "w", &[1, 2]),
            Err(Ct2Error::WrongShape { .. })
        ));
        assert_eq!(m.get("nope").unwrap_err(), Ct2Error::Missing("nope".into()));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let b = sample();
        for n in 0..b.len() - 4 {
            assert!(Ct2Model::parse(&b[..n]).is_err(), "prefix {n} parsed");
        }
    }

    #[test]
    fn lying_sizes_are_errors() {
        let mut b = sample();
        // Variable count far beyond the file.
        b[4 + 2 + 9 + 4..4 + 2 + 9 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Ct2Model::parse(&b).is_err());
        assert!(matches!(
            Ct2Model::parse(&7u32.to_le_bytes()),
            Err(Ct2Error::Version(7))
        ));
    }

    #[test]
    fn half_precision_conversion() {
        for (h, f) in [
            (0x3c00u16, 1.0f32),
            (0x0001, 5.960_464_5e-8),
            (0x7bff, 65504.0),
            (0x8000, -0.0),
            (0x3555, 0.333_251_95),
        ] {
            assert_eq!(f16_to_f32(h), f, "{h:#x}");
        }
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
    }
}
