//! A bounds-checked reader of the safetensors container: an 8-byte little-endian header
//! length, a JSON header naming each tensor's dtype, shape and byte range, then the data.
//!
//! The bytes are untrusted: the header length, every offset, dtype and shape is checked
//! against the buffer before a view is handed out, so every [`TensorView::data`] is in bounds
//! and exactly as long as its shape says.

/// Largest header accepted (the format's own reference limit).
pub const MAX_HEADER: usize = 100 << 20;

/// Element types this reader hands out (others are reported by name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
    /// Unsigned bytes (BitNet's packed ternary weights).
    U8,
    /// Signed bytes.
    I8,
    /// Signed 64-bit integers (positions and counters beside the weights).
    I64,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::U8 | Dtype::I8 => 1,
            Dtype::I64 => 8,
        }
    }
}

/// Why a safetensors buffer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SafetensorsError {
    /// Shorter than its 8-byte header length.
    #[error("the file is too short to be safetensors ({0} bytes)")]
    TooShort(usize),
    /// Reading the file failed.
    #[error("cannot read the file: {0}")]
    Io(String),
    /// The header length is larger than the file or the limit.
    #[error("the header length {len} does not fit the file of {file} bytes")]
    HeaderLength {
        /// Claimed length.
        len: u64,
        /// File size.
        file: usize,
    },
    /// The header is not a JSON object of tensor entries.
    #[error("the header is not valid: {0}")]
    Header(String),
    /// A tensor's entry is malformed.
    #[error("tensor '{name}': {why}")]
    Tensor {
        /// The tensor.
        name: String,
        /// What is wrong.
        why: String,
    },
}

/// One tensor of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorView<'a> {
    /// Its name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Its bytes (exactly `product(shape) × dtype.size()`).
    pub data: &'a [u8],
}

/// One tensor's entry in a header: where its bytes lie relative to the data section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Its name.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// First byte, from the start of the data section.
    pub begin: u64,
    /// One past the last byte (`end − begin` is exactly `product(shape) × dtype.size()`).
    pub end: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn elems(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A header read from the front of a file: its tensors and where the data section starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Offset of the data section in the file (8 + the header's length).
    pub data_start: u64,
    /// The tensors, in header order (`__metadata__` skipped).
    pub tensors: Vec<TensorInfo>,
}

/// Checks the 8-byte length prefix of a file of `file_len` bytes and returns the header's
/// end (the data section's start).
pub fn header_end(prefix: [u8; 8], file_len: u64) -> Result<u64, SafetensorsError> {
    let len = u64::from_le_bytes(prefix);
    len.checked_add(8)
        .filter(|&e| len <= MAX_HEADER as u64 && e <= file_len)
        .ok_or(SafetensorsError::HeaderLength {
            len,
            file: usize::try_from(file_len).unwrap_or(usize::MAX),
        })
}

/// Parses a header's JSON against a data section of `data_len` bytes: every dtype, shape and
/// byte range is checked, so each [`TensorInfo`] lies inside the data.
pub fn parse_header(json: &[u8], data_len: u64) -> Result<Vec<TensorInfo>, SafetensorsError> {
    let header: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| SafetensorsError::Header(e.to_string()))?;
    let serde_json::Value::Object(entries) = header else {
        return Err(SafetensorsError::Header("not a JSON object".into()));
    };
    let mut out = Vec::with_capacity(entries.len());
    for (name, entry) in &entries {
        if name == "__metadata__" {
            continue;
        }
        let bad = |why: String| SafetensorsError::Tensor {
            name: name.clone(),
            why,
        };
        out.push(tensor_info(name, entry, data_len).map_err(bad)?);
    }
    Ok(out)
}

/// Reads and checks the header at the front of `file` (the data is not read).
pub fn read_header(file: &std::fs::File) -> Result<Header, SafetensorsError> {
    use std::io::Read as _;
    let io = |e: std::io::Error| SafetensorsError::Io(e.to_string());
    let file_len = file.metadata().map_err(io)?.len();
    let mut r = file;
    let mut prefix = [0u8; 8];
    if file_len < 8 {
        return Err(SafetensorsError::TooShort(file_len as usize));
    }
    r.read_exact(&mut prefix).map_err(io)?;
    let data_start = header_end(prefix, file_len)?;
    let mut json = vec![0u8; (data_start - 8) as usize];
    r.read_exact(&mut json).map_err(io)?;
    let tensors = parse_header(&json, file_len - data_start)?;
    Ok(Header {
        data_start,
        tensors,
    })
}

/// The tensors of a safetensors buffer, in header order (`__metadata__` skipped).
///
/// Dtypes other than F32, F16, BF16 and I64 are refused, naming the tensor and dtype.
pub fn parse(buf: &[u8]) -> Result<Vec<TensorView<'_>>, SafetensorsError> {
    let Some(len_bytes) = buf.get(..8) else {
        return Err(SafetensorsError::TooShort(buf.len()));
    };
    let mut lb = [0u8; 8];
    lb.copy_from_slice(len_bytes);
    let header_end = header_end(lb, buf.len() as u64)? as usize;
    let data = &buf[header_end..];
    let infos = parse_header(&buf[8..header_end], data.len() as u64)?;
    let mut out = Vec::with_capacity(infos.len());
    for t in infos {
        if !matches!(t.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::I64) {
            return Err(SafetensorsError::Tensor {
                name: t.name,
                why: format!("dtype {:?} is not supported (F32, F16, BF16, I64)", t.dtype),
            });
        }
        out.push(TensorView {
            data: &data[t.begin as usize..t.end as usize],
            name: t.name,
            dtype: t.dtype,
            shape: t.shape,
        });
    }
    Ok(out)
}

fn tensor_info(name: &str, entry: &serde_json::Value, data_len: u64) -> Result<TensorInfo, String> {
    let dtype = match entry.get("dtype").and_then(|v| v.as_str()) {
        Some("F32") => Dtype::F32,
        Some("F16") => Dtype::F16,
        Some("BF16") => Dtype::BF16,
        Some("U8") => Dtype::U8,
        Some("I8") => Dtype::I8,
        Some("I64") => Dtype::I64,
        Some(other) => {
            return Err(format!(
                "dtype {other} is not supported (F32, F16, BF16, U8, I8, I64)"
            ))
        }
        None => return Err("no dtype".into()),
    };
    let dims = entry
        .get("shape")
        .and_then(|v| v.as_array())
        .ok_or("no shape")?;
    let mut shape = Vec::with_capacity(dims.len());
    let mut elems: u64 = 1;
    for d in dims {
        let d = d
            .as_u64()
            .filter(|&d| usize::try_from(d).is_ok())
            .ok_or("a dimension is not a non-negative integer")?;
        elems = elems.checked_mul(d).ok_or("the shape overflows")?;
        shape.push(d as usize);
    }
    let offs = entry
        .get("data_offsets")
        .and_then(|v| v.as_array())
        .filter(|a| a.len() == 2)
        .ok_or("data_offsets is not a pair")?;
    let off = |i: usize| {
        offs[i]
            .as_u64()
            .ok_or("data_offsets are not non-negative integers")
    };
    let (begin, end) = (off(0)?, off(1)?);
    if begin > end || end > data_len {
        return Err(format!(
            "data_offsets [{begin}, {end}] lie outside the {data_len} data bytes"
        ));
    }
    let want = elems
        .checked_mul(dtype.size() as u64)
        .filter(|&w| usize::try_from(w).is_ok())
        .ok_or("the shape overflows")?;
    if end - begin != want {
        return Err(format!(
            "data_offsets span {} bytes but the shape needs {want}",
            end - begin
        ));
    }
    Ok(TensorInfo {
        name: name.to_string(),
        dtype,
        shape,
        begin,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn reads_tensors_and_skips_metadata() {
        let h = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,1],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[8,10]}}"#;
        let f = file(h, &[0; 10]);
        let t = parse(&f).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].dtype, t[0].shape.clone()), (Dtype::F32, vec![2, 1]));
        assert_eq!(t[1].data.len(), 2);
    }

    #[test]
    fn refuses_lies() {
        assert!(matches!(parse(&[1, 2]), Err(SafetensorsError::TooShort(2))));
        let mut f = file("{}", &[]);
        f[0] = 200;
        assert!(matches!(
            parse(&f),
            Err(SafetensorsError::HeaderLength { .. })
        ));
        let cases = [
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}}"#,
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
            r#"{"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}"#,
            r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}}"#,
            r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]}}"#,
            r#"{"a":{"dtype":"F32","shape":[2]}}"#,
        ];
        for h in cases {
            let f = file(h, &[0; 8]);
            assert!(
                matches!(parse(&f), Err(SafetensorsError::Tensor { .. })),
                "{h}"
            );
        }
        assert!(matches!(
            parse(&file("[1]", &[])),
            Err(SafetensorsError::Header(_))
        ));
    }
}
