//! A streaming GGUF v3 writer: the header (metadata and tensor table) is laid out from the
//! tensors' declared types and shapes before any data exists, then each tensor's bytes are
//! written in table order, in as many pieces as the caller likes. Nothing but the header is
//! held in memory.

use std::io::Write;

use trillim_core::kernels::WeightType;

/// Alignment of the data section and of every tensor in it (GGUF's default).
pub const ALIGNMENT: u64 = 32;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// GGUF type 4.
    U32(u32),
    /// GGUF type 5.
    I32(i32),
    /// GGUF type 6.
    F32(f32),
    /// GGUF type 7.
    Bool(bool),
    /// GGUF type 8.
    Str(String),
    /// An array of strings.
    Strs(Vec<String>),
    /// An array of `i32`.
    I32s(Vec<i32>),
    /// An array of `f32`.
    F32s(Vec<f32>),
}

/// A tensor of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDecl {
    /// Its name.
    pub name: String,
    /// GGUF dimensions, innermost (the row length) first.
    pub dims: Vec<u64>,
    /// Storage type.
    pub ty: WeightType,
}

impl TensorDecl {
    /// Bytes of its data, or `None` when the row length is not a whole number of blocks.
    pub fn bytes(&self) -> Option<u64> {
        let n: u64 = self.dims.iter().product();
        self.ty
            .tensor_bytes(usize::try_from(n).ok()?)
            .map(|b| b as u64)
    }
}

/// Why a GGUF could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The sink failed.
    #[error("cannot write the GGUF file: {0}")]
    Io(#[from] std::io::Error),
    /// A tensor's shape does not fit its type.
    #[error("tensor '{0}': its row length is not a whole number of {1} blocks")]
    Shape(String, &'static str),
    /// More or fewer bytes than the table declares.
    #[error("tensor data does not match the table: {0}")]
    Data(String),
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    let arr = |out: &mut Vec<u8>, ty: u32, n: usize| {
        out.extend_from_slice(&9u32.to_le_bytes());
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&(n as u64).to_le_bytes());
    };
    match v {
        Value::U32(x) => {
            out.extend_from_slice(&4u32.to_le_bytes());
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::I32(x) => {
            out.extend_from_slice(&5u32.to_le_bytes());
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::F32(x) => {
            out.extend_from_slice(&6u32.to_le_bytes());
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::Bool(x) => {
            out.extend_from_slice(&7u32.to_le_bytes());
            out.push(*x as u8);
        }
        Value::Str(s) => {
            out.extend_from_slice(&8u32.to_le_bytes());
            put_str(out, s);
        }
        Value::Strs(a) => {
            arr(out, 8, a.len());
            a.iter().for_each(|s| put_str(out, s));
        }
        Value::I32s(a) => {
            arr(out, 5, a.len());
            a.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        Value::F32s(a) => {
            arr(out, 6, a.len());
            a.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
    }
}

fn pad(n: u64) -> u64 {
    (ALIGNMENT - n % ALIGNMENT) % ALIGNMENT
}

/// Writes one GGUF file: the header at [`GgufWriter::new`], then the tensors' data through
/// [`GgufWriter::write`] in table order, then [`GgufWriter::finish`].
#[derive(Debug)]
pub struct GgufWriter<W: Write> {
    out: W,
    sizes: Vec<(String, u64)>,
    current: usize,
    written: u64,
    total: u64,
}

impl<W: Write> GgufWriter<W> {
    /// Writes the header for `meta` and `tensors`.
    pub fn new(
        mut out: W,
        meta: &[(String, Value)],
        tensors: &[TensorDecl],
    ) -> Result<GgufWriter<W>, WriteError> {
        let mut h = Vec::new();
        h.extend_from_slice(b"GGUF");
        h.extend_from_slice(&3u32.to_le_bytes());
        h.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        h.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        for (k, v) in meta {
            put_str(&mut h, k);
            put_value(&mut h, v);
        }
        let mut offset = 0u64;
        let mut sizes = Vec::with_capacity(tensors.len());
        for t in tensors {
            let bytes = t
                .bytes()
                .ok_or_else(|| WriteError::Shape(t.name.clone(), t.ty.name()))?;
            put_str(&mut h, &t.name);
            h.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                h.extend_from_slice(&d.to_le_bytes());
            }
            h.extend_from_slice(&t.ty.ggml_id().to_le_bytes());
            h.extend_from_slice(&offset.to_le_bytes());
            offset += bytes + pad(bytes);
            sizes.push((t.name.clone(), bytes));
        }
        h.resize(h.len() + pad(h.len() as u64) as usize, 0);
        out.write_all(&h)?;
        Ok(GgufWriter {
            out,
            sizes,
            current: 0,
            written: 0,
            total: h.len() as u64 + offset,
        })
    }

    /// Size of the whole file once written.
    pub fn file_size(&self) -> u64 {
        self.total
    }

    /// Appends data of the current tensor; a tensor is complete (and padded) once all its
    /// declared bytes are written, and the next write starts the next tensor.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), WriteError> {
        while !data.is_empty() {
            let Some((name, size)) = self.sizes.get(self.current) else {
                return Err(WriteError::Data(
                    "more data than the tensors declare".into(),
                ));
            };
            let take = (size - self.written).min(data.len() as u64) as usize;
            if take == 0 && *size != 0 {
                return Err(WriteError::Data(format!("tensor '{name}' overflowed")));
            }
            self.out.write_all(&data[..take])?;
            self.written += take as u64;
            data = &data[take..];
            self.close_full()?;
        }
        Ok(())
    }

    fn close_full(&mut self) -> Result<(), WriteError> {
        while let Some(&(_, size)) = self.sizes.get(self.current) {
            if self.written < size {
                break;
            }
            self.out
                .write_all(&[0u8; ALIGNMENT as usize][..pad(size) as usize])?;
            self.current += 1;
            self.written = 0;
        }
        Ok(())
    }

    /// Checks that every tensor was written and returns the sink.
    pub fn finish(mut self) -> Result<W, WriteError> {
        self.close_full()?;
        if let Some((name, _)) = self.sizes.get(self.current) {
            return Err(WriteError::Data(format!("tensor '{name}' was not written")));
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trillim_core::format::gguf::Gguf;

    #[test]
    fn the_reader_reads_what_the_writer_wrote() {
        let meta = vec![
            (
                "general.architecture".to_string(),
                Value::Str("llama".into()),
            ),
            ("llama.block_count".to_string(), Value::U32(2)),
            ("x.f".to_string(), Value::F32(0.5)),
            ("x.b".to_string(), Value::Bool(true)),
            (
                "x.s".to_string(),
                Value::Strs(vec!["a".into(), "bc".into()]),
            ),
            ("x.i".to_string(), Value::I32s(vec![1, -2])),
            ("x.g".to_string(), Value::F32s(vec![1.5])),
        ];
        let tensors = vec![
            TensorDecl {
                name: "a".into(),
                dims: vec![3],
                ty: WeightType::F32,
            },
            TensorDecl {
                name: "b".into(),
                dims: vec![32, 2],
                ty: WeightType::Q8_0,
            },
        ];
        let mut w = GgufWriter::new(Vec::new(), &meta, &tensors).unwrap();
        w.write(&[1u8; 5]).unwrap();
        w.write(&[2u8; 7]).unwrap();
        w.write(&[3u8; 68]).unwrap();
        let size = w.file_size();
        let buf = w.finish().unwrap();
        assert_eq!(buf.len() as u64, size);
        let g = Gguf::parse(&buf).unwrap();
        assert_eq!(g.get_str("general.architecture"), Some("llama"));
        assert_eq!(g.get_u64("llama.block_count"), Some(2));
        assert_eq!(g.get("x.b").and_then(|v| v.as_bool()), Some(true));
        let a = g.tensor("a").unwrap();
        assert_eq!(a.data.len(), 12);
        assert_eq!(&a.data[5..], &[2u8; 7]);
        let b = g.tensor("b").unwrap();
        assert_eq!(b.ty, Some(WeightType::Q8_0));
        assert_eq!(b.data, &[3u8; 68][..]);
    }

    #[test]
    fn short_or_long_data_is_refused() {
        let t = vec![TensorDecl {
            name: "a".into(),
            dims: vec![2],
            ty: WeightType::F32,
        }];
        let mut w = GgufWriter::new(Vec::new(), &[], &t).unwrap();
        w.write(&[0; 4]).unwrap();
        assert!(w.finish().is_err());
        let mut w = GgufWriter::new(Vec::new(), &[], &t).unwrap();
        assert!(w.write(&[0; 9]).is_err());
        let bad = vec![TensorDecl {
            name: "q".into(),
            dims: vec![31],
            ty: WeightType::Q8_0,
        }];
        assert!(GgufWriter::new(Vec::new(), &[], &bad).is_err());
    }
}
