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
    /// Signed 64-bit integers (positions and counters beside the weights).
    I64,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
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

/// The tensors of a safetensors buffer, in header order (`__metadata__` skipped).
///
/// Dtypes other than F32, F16, BF16 and I64 are refused, naming the tensor and dtype.
pub fn parse(buf: &[u8]) -> Result<Vec<TensorView<'_>>, SafetensorsError> {
    let Some(len_bytes) = buf.get(..8) else {
        return Err(SafetensorsError::TooShort(buf.len()));
    };
    let mut lb = [0u8; 8];
    lb.copy_from_slice(len_bytes);
    let len = u64::from_le_bytes(lb);
    let header_end = usize::try_from(len)
        .ok()
        .filter(|&l| l <= MAX_HEADER)
        .and_then(|l| l.checked_add(8))
        .filter(|&e| e <= buf.len())
        .ok_or(SafetensorsError::HeaderLength {
            len,
            file: buf.len(),
        })?;
    let data = &buf[header_end..];
    let header: serde_json::Value = serde_json::from_slice(&buf[8..header_end])
        .map_err(|e| SafetensorsError::Header(e.to_string()))?;
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
        out.push(tensor(name, entry, data).map_err(bad)?);
    }
    Ok(out)
}

fn tensor<'a>(
    name: &str,
    entry: &serde_json::Value,
    data: &'a [u8],
) -> Result<TensorView<'a>, String> {
    let dtype = match entry.get("dtype").and_then(|v| v.as_str()) {
        Some("F32") => Dtype::F32,
        Some("F16") => Dtype::F16,
        Some("BF16") => Dtype::BF16,
        Some("I64") => Dtype::I64,
        Some(other) => {
            return Err(format!(
                "dtype {other} is not supported (F32, F16, BF16, I64)"
            ))
        }
        None => return Err("no dtype".into()),
    };
    let dims = entry
        .get("shape")
        .and_then(|v| v.as_array())
        .ok_or("no shape")?;
    let mut shape = Vec::with_capacity(dims.len());
    let mut elems: usize = 1;
    for d in dims {
        let d = d
            .as_u64()
            .and_then(|d| usize::try_from(d).ok())
            .ok_or("a dimension is not a non-negative integer")?;
        elems = elems.checked_mul(d).ok_or("the shape overflows")?;
        shape.push(d);
    }
    let offs = entry
        .get("data_offsets")
        .and_then(|v| v.as_array())
        .filter(|a| a.len() == 2)
        .ok_or("data_offsets is not a pair")?;
    let off = |i: usize| {
        offs[i]
            .as_u64()
            .and_then(|o| usize::try_from(o).ok())
            .ok_or("data_offsets are not non-negative integers")
    };
    let (begin, end) = (off(0)?, off(1)?);
    if begin > end || end > data.len() {
        return Err(format!(
            "data_offsets [{begin}, {end}] lie outside the {} data bytes",
            data.len()
        ));
    }
    let want = elems
        .checked_mul(dtype.size())
        .ok_or("the shape overflows")?;
    if end - begin != want {
        return Err(format!(
            "data_offsets span {} bytes but the shape needs {want}",
            end - begin
        ));
    }
    Ok(TensorView {
        name: name.to_string(),
        dtype,
        shape,
        data: &data[begin..end],
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
