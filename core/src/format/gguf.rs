//! GGUF reader over a byte slice (versions 2 and 3).
//!
//! [`Gguf::parse`] walks the whole header once and checks every count, length and offset
//! against the buffer; afterwards every view it hands out is in bounds. Nothing is copied and
//! nothing is allocated: metadata and tensor tables are re-walked on lookup.

use core::fmt;

use trillim_kernels::WeightType;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a tensor may have (as ggml).
pub const MAX_DIMS: usize = 4;
const MAX_ARRAY_DEPTH: u32 = 4;

/// What was wrong with a GGUF file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgufError {
    /// The file does not start with `GGUF`.
    BadMagic,
    /// The version is not 2 or 3.
    UnsupportedVersion(u32),
    /// The header ends before `what` could be read.
    Truncated(&'static str),
    /// A metadata value has an unknown type id.
    BadValueType(u32),
    /// Arrays nest deeper than the reader allows.
    TooDeep,
    /// A tensor has zero or more than four dimensions, or a zero-sized dimension.
    BadDims,
    /// A tensor's element count overflows.
    Overflow,
    /// `general.alignment` is zero, not a power of two, or not a u32.
    BadAlignment,
    /// A tensor's data offset is not aligned.
    Misaligned,
    /// A tensor's data lies (partly) outside the file.
    DataOutOfBounds,
    /// A key or tensor name is not UTF-8.
    BadString,
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgufError::BadMagic => write!(f, "not a GGUF file (bad magic)"),
            GgufError::UnsupportedVersion(v) => {
                write!(f, "unsupported GGUF version {v} (2 and 3 are supported)")
            }
            GgufError::Truncated(what) => write!(f, "GGUF file is truncated while reading {what}"),
            GgufError::BadValueType(t) => write!(f, "GGUF metadata has unknown value type {t}"),
            GgufError::TooDeep => write!(f, "GGUF metadata arrays nest too deeply"),
            GgufError::BadDims => write!(f, "GGUF tensor has invalid dimensions"),
            GgufError::Overflow => write!(f, "GGUF tensor size overflows"),
            GgufError::BadAlignment => write!(f, "GGUF general.alignment is invalid"),
            GgufError::Misaligned => write!(f, "GGUF tensor data is not aligned"),
            GgufError::DataOutOfBounds => write!(f, "GGUF tensor data lies outside the file"),
            GgufError::BadString => write!(f, "GGUF key or tensor name is not UTF-8"),
        }
    }
}

impl core::error::Error for GgufError {}

/// Metadata value type ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl ValueType {
    fn from_id(id: u32) -> Result<ValueType, GgufError> {
        Ok(match id {
            0 => ValueType::U8,
            1 => ValueType::I8,
            2 => ValueType::U16,
            3 => ValueType::I16,
            4 => ValueType::U32,
            5 => ValueType::I32,
            6 => ValueType::F32,
            7 => ValueType::Bool,
            8 => ValueType::String,
            9 => ValueType::Array,
            10 => ValueType::U64,
            11 => ValueType::I64,
            12 => ValueType::F64,
            other => return Err(GgufError::BadValueType(other)),
        })
    }

    /// Fixed byte size, or the minimum size for strings (8) and arrays (12).
    fn min_size(self) -> usize {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => 1,
            ValueType::U16 | ValueType::I16 => 2,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
            ValueType::U64 | ValueType::I64 | ValueType::F64 | ValueType::String => 8,
            ValueType::Array => 12,
        }
    }

    fn is_fixed(self) -> bool {
        !matches!(self, ValueType::String | ValueType::Array)
    }
}

/// A bounds-checked little-endian cursor.
#[derive(Clone, Copy)]
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], GgufError> {
        let end = self.pos.checked_add(n).ok_or(GgufError::Truncated(what))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(GgufError::Truncated(what))?;
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn string(&mut self, what: &'static str) -> Result<&'a [u8], GgufError> {
        let n = self.u64(what)?;
        if n > self.remaining() as u64 {
            return Err(GgufError::Truncated(what));
        }
        self.take(n as usize, what)
    }
    /// Skips one value of type `ty`, checking every length.
    fn skip_value(&mut self, ty: ValueType, depth: u32) -> Result<(), GgufError> {
        match ty {
            ValueType::String => {
                self.string("a string value")?;
            }
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::TooDeep);
                }
                let et = ValueType::from_id(self.u32("an array type")?)?;
                let n = self.u64("an array length")?;
                if n > (self.remaining() / et.min_size()) as u64 {
                    return Err(GgufError::Truncated("an array"));
                }
                if et.is_fixed() {
                    self.take(n as usize * et.min_size(), "an array")?;
                } else {
                    for _ in 0..n {
                        self.skip_value(et, depth + 1)?;
                    }
                }
            }
            fixed => {
                self.take(fixed.min_size(), "a value")?;
            }
        }
        Ok(())
    }
}

/// A metadata value.
#[derive(Clone, Copy, Debug)]
pub enum Value<'a> {
    /// Any integer type, widened.
    Int(i128),
    /// `f32` or `f64`, widened.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string's raw bytes (GGUF strings are meant to be UTF-8 but are not checked).
    Str(&'a [u8]),
    /// An array.
    Array(Array<'a>),
}

impl<'a> Value<'a> {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Int(v) if v >= 0 && v <= u64::MAX as i128 => Some(v as u64),
            _ => None,
        }
    }
    /// The value as a float (integers convert).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Float(v) => Some(v),
            Value::Int(v) => Some(v as f64),
            _ => None,
        }
    }
    /// The value as a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    /// The value as UTF-8 text.
    pub fn as_str(&self) -> Option<&'a str> {
        match *self {
            Value::Str(s) => core::str::from_utf8(s).ok(),
            _ => None,
        }
    }
    /// The value as an array.
    pub fn as_array(&self) -> Option<Array<'a>> {
        match *self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

fn read_value<'a>(c: &mut Cursor<'a>, ty: ValueType) -> Value<'a> {
    // Only called on ranges already validated by `skip_value`.
    let start = *c;
    let v = match ty {
        ValueType::U8 => Value::Int(c.take(1, "").map(|b| b[0] as i128).unwrap_or(0)),
        ValueType::I8 => Value::Int(c.take(1, "").map(|b| b[0] as i8 as i128).unwrap_or(0)),
        ValueType::Bool => Value::Bool(c.take(1, "").map(|b| b[0] != 0).unwrap_or(false)),
        ValueType::U16 => Value::Int(
            c.take(2, "")
                .map(|b| u16::from_le_bytes([b[0], b[1]]) as i128)
                .unwrap_or(0),
        ),
        ValueType::I16 => Value::Int(
            c.take(2, "")
                .map(|b| i16::from_le_bytes([b[0], b[1]]) as i128)
                .unwrap_or(0),
        ),
        ValueType::U32 => Value::Int(c.u32("").unwrap_or(0) as i128),
        ValueType::I32 => Value::Int(c.u32("").unwrap_or(0) as i32 as i128),
        ValueType::F32 => Value::Float(f32::from_bits(c.u32("").unwrap_or(0)) as f64),
        ValueType::U64 => Value::Int(c.u64("").unwrap_or(0) as i128),
        ValueType::I64 => Value::Int(c.u64("").unwrap_or(0) as i64 as i128),
        ValueType::F64 => Value::Float(f64::from_bits(c.u64("").unwrap_or(0))),
        ValueType::String => Value::Str(c.string("").unwrap_or(&[])),
        ValueType::Array => {
            let et = c.u32("").ok().and_then(|t| ValueType::from_id(t).ok());
            let n = c.u64("").unwrap_or(0);
            let body_start = c.pos;
            let mut probe = start;
            let _ = probe.skip_value(ValueType::Array, 0);
            c.pos = probe.pos;
            match et {
                Some(et) => Value::Array(Array {
                    elem: et,
                    len: n as usize,
                    data: &c.buf[body_start..probe.pos],
                }),
                None => Value::Int(0),
            }
        }
    };
    v
}

/// A metadata array (already validated).
#[derive(Clone, Copy, Debug)]
pub struct Array<'a> {
    elem: ValueType,
    len: usize,
    data: &'a [u8],
}

impl<'a> Array<'a> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True if the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Element type.
    pub fn elem_type(&self) -> ValueType {
        self.elem
    }
    /// Element `i` in O(1) for fixed-size element types, O(i) for strings and arrays.
    pub fn get(&self, i: usize) -> Option<Value<'a>> {
        if i >= self.len {
            return None;
        }
        if self.elem.is_fixed() {
            let sz = self.elem.min_size();
            let mut c = Cursor {
                buf: self.data,
                pos: i * sz,
            };
            Some(read_value(&mut c, self.elem))
        } else {
            self.iter().nth(i)
        }
    }
    /// Iterates the elements in order.
    pub fn iter(&self) -> ArrayIter<'a> {
        ArrayIter {
            arr: *self,
            cur: Cursor {
                buf: self.data,
                pos: 0,
            },
            left: self.len,
        }
    }
    /// Element `i` as `f32` for `F32` arrays (O(1)).
    pub fn f32_at(&self, i: usize) -> Option<f32> {
        match (self.elem, self.get(i)) {
            (ValueType::F32, Some(Value::Float(v))) => Some(v as f32),
            _ => None,
        }
    }
}

/// Iterator over an [`Array`].
#[derive(Clone, Debug)]
pub struct ArrayIter<'a> {
    arr: Array<'a>,
    cur: Cursor<'a>,
    left: usize,
}

impl fmt::Debug for Cursor<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cursor({})", self.pos)
    }
}

impl<'a> Iterator for ArrayIter<'a> {
    type Item = Value<'a>;
    fn next(&mut self) -> Option<Value<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(read_value(&mut self.cur, self.arr.elem))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

/// One entry of the tensor table.
#[derive(Clone, Copy, Debug)]
pub struct TensorInfo<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// Dimensions, innermost (row length) first; unused entries are 1.
    pub dims: [u64; MAX_DIMS],
    /// Number of used dimensions.
    pub n_dims: usize,
    /// Raw ggml type id.
    pub type_id: u32,
    /// The type, if this build supports it.
    pub ty: Option<WeightType>,
    /// The tensor's bytes (empty when `ty` is `None`: its size is unknown).
    pub data: &'a [u8],
}

impl TensorInfo<'_> {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Row length (the first dimension).
    pub fn row_len(&self) -> usize {
        self.dims[0] as usize
    }
    /// Number of rows (product of the other dimensions).
    pub fn n_rows(&self) -> usize {
        (self.n_elements() / self.dims[0]) as usize
    }
}

/// Name of a ggml type id, for error messages.
pub fn ggml_type_name(id: u32) -> &'static str {
    const NAMES: [&str; 40] = [
        "F32",
        "F16",
        "Q4_0",
        "Q4_1",
        "Q4_2",
        "Q4_3",
        "Q5_0",
        "Q5_1",
        "Q8_0",
        "Q8_1",
        "Q2_K",
        "Q3_K",
        "Q4_K",
        "Q5_K",
        "Q6_K",
        "Q8_K",
        "IQ2_XXS",
        "IQ2_XS",
        "IQ3_XXS",
        "IQ1_S",
        "IQ4_NL",
        "IQ3_S",
        "IQ2_S",
        "IQ4_XS",
        "I8",
        "I16",
        "I32",
        "I64",
        "F64",
        "IQ1_M",
        "BF16",
        "Q4_0_4_4",
        "Q4_0_4_8",
        "Q4_0_8_8",
        "TQ1_0",
        "TQ2_0",
        "I2_S",
        "IQ4_NL_4_4",
        "IQ4_NL_4_8",
        "IQ4_NL_8_8",
    ];
    NAMES.get(id as usize).copied().unwrap_or("unknown")
}

/// A parsed, validated GGUF file.
#[derive(Clone, Copy, Debug)]
pub struct Gguf<'a> {
    buf: &'a [u8],
    /// File format version (2 or 3).
    pub version: u32,
    n_kv: usize,
    n_tensors: usize,
    kv_start: usize,
    tensors_start: usize,
    data_start: usize,
    alignment: u64,
}

impl<'a> Gguf<'a> {
    /// Parses and validates the header, metadata and tensor table of `buf`.
    pub fn parse(buf: &'a [u8]) -> Result<Gguf<'a>, GgufError> {
        let mut c = Cursor { buf, pos: 0 };
        if c.take(4, "the magic").map_err(|_| GgufError::BadMagic)? != MAGIC {
            return Err(GgufError::BadMagic);
        }
        let version = c.u32("the version")?;
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = c.u64("the tensor count")?;
        let n_kv = c.u64("the metadata count")?;
        // Each key-value takes at least 8 (key) + 4 (type) + 1 bytes; each tensor info at least
        // 8 + 4 + 8 + 4 + 8 bytes. Reject counts the file cannot hold before looping.
        if n_kv > (c.remaining() / 13) as u64 {
            return Err(GgufError::Truncated("the metadata"));
        }
        let kv_start = c.pos;
        let mut alignment = DEFAULT_ALIGNMENT;
        for _ in 0..n_kv {
            let key = c.string("a metadata key")?;
            core::str::from_utf8(key).map_err(|_| GgufError::BadString)?;
            let ty = ValueType::from_id(c.u32("a metadata type")?)?;
            let vstart = c;
            c.skip_value(ty, 0)?;
            if key == b"general.alignment" {
                let mut v = vstart;
                alignment = match (ty, read_value(&mut v, ty)) {
                    (ValueType::U32, Value::Int(a)) if a > 0 && (a as u64).is_power_of_two() => {
                        a as u64
                    }
                    _ => return Err(GgufError::BadAlignment),
                };
            }
        }
        if n_tensors > (c.remaining() / 32) as u64 {
            return Err(GgufError::Truncated("the tensor table"));
        }
        let tensors_start = c.pos;
        for _ in 0..n_tensors {
            read_tensor_header(&mut c)?;
        }
        let data_start = align_up(c.pos as u64, alignment).ok_or(GgufError::Overflow)?;
        let g = Gguf {
            buf,
            version,
            n_kv: n_kv as usize,
            n_tensors: n_tensors as usize,
            kv_start,
            tensors_start,
            data_start: data_start.min(buf.len() as u64) as usize,
            alignment,
        };
        // Validate every tensor's data range once.
        let data_len = (buf.len() as u64).saturating_sub(data_start);
        let mut c = Cursor {
            buf,
            pos: tensors_start,
        };
        for _ in 0..n_tensors {
            let h = read_tensor_header(&mut c)?;
            if h.offset % alignment != 0 {
                return Err(GgufError::Misaligned);
            }
            if let Some(ty) = WeightType::from_ggml(h.type_id) {
                let n = h.dims.iter().product::<u64>();
                let size = usize::try_from(n)
                    .ok()
                    .filter(|_| h.dims[0] % ty.block_len() as u64 == 0)
                    .and_then(|n| ty.tensor_bytes(n))
                    .ok_or(GgufError::BadDims)? as u64;
                let end = h.offset.checked_add(size).ok_or(GgufError::Overflow)?;
                if end > data_len {
                    return Err(GgufError::DataOutOfBounds);
                }
            } else if h.offset > data_len {
                return Err(GgufError::DataOutOfBounds);
            }
        }
        Ok(g)
    }

    /// The underlying bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Data alignment in bytes.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Offset of the tensor data section in the file.
    pub fn data_offset(&self) -> usize {
        self.data_start
    }

    /// Number of metadata entries.
    pub fn metadata_len(&self) -> usize {
        self.n_kv
    }

    /// Number of tensors.
    pub fn tensor_count(&self) -> usize {
        self.n_tensors
    }

    /// Iterates `(key, value)` metadata pairs in file order.
    pub fn metadata(&self) -> impl Iterator<Item = (&'a str, Value<'a>)> + 'a {
        let mut c = Cursor {
            buf: self.buf,
            pos: self.kv_start,
        };
        (0..self.n_kv).map(move |_| {
            // Validated by `parse`: these reads cannot fail.
            let key = c.string("").unwrap_or(&[]);
            let ty = c.u32("").ok().and_then(|t| ValueType::from_id(t).ok());
            let v = match ty {
                Some(ty) => read_value(&mut c, ty),
                None => Value::Int(0),
            };
            (core::str::from_utf8(key).unwrap_or(""), v)
        })
    }

    /// Looks up a metadata value by key.
    pub fn get(&self, key: &str) -> Option<Value<'a>> {
        self.metadata().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// A string value by key.
    pub fn get_str(&self, key: &str) -> Option<&'a str> {
        self.get(key).and_then(|v| v.as_str())
    }

    /// An unsigned integer value by key.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| v.as_u64())
    }

    /// A float value by key (integers convert).
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(|v| v.as_f64())
    }

    /// An array value by key.
    pub fn get_array(&self, key: &str) -> Option<Array<'a>> {
        self.get(key).and_then(|v| v.as_array())
    }

    /// Iterates the tensor table in file order.
    pub fn tensors(&self) -> impl Iterator<Item = TensorInfo<'a>> + 'a {
        let mut c = Cursor {
            buf: self.buf,
            pos: self.tensors_start,
        };
        let buf = self.buf;
        let data_start = self.data_start;
        (0..self.n_tensors).filter_map(move |_| {
            let h = read_tensor_header(&mut c).ok()?;
            let ty = WeightType::from_ggml(h.type_id);
            let data = match ty {
                Some(ty) => {
                    let size = ty.tensor_bytes(h.dims.iter().product::<u64>() as usize)?;
                    let start = data_start + h.offset as usize;
                    &buf[start..start + size]
                }
                None => &buf[..0],
            };
            Some(TensorInfo {
                name: h.name,
                dims: h.dims,
                n_dims: h.n_dims,
                type_id: h.type_id,
                ty,
                data,
            })
        })
    }

    /// Looks up a tensor by name.
    pub fn tensor(&self, name: &str) -> Option<TensorInfo<'a>> {
        self.tensors().find(|t| t.name == name)
    }
}

struct TensorHeader<'a> {
    name: &'a str,
    dims: [u64; MAX_DIMS],
    n_dims: usize,
    type_id: u32,
    offset: u64,
}

fn read_tensor_header<'a>(c: &mut Cursor<'a>) -> Result<TensorHeader<'a>, GgufError> {
    let name = c.string("a tensor name")?;
    let name = core::str::from_utf8(name).map_err(|_| GgufError::BadString)?;
    let n_dims = c.u32("a tensor's dimension count")? as usize;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(GgufError::BadDims);
    }
    let mut dims = [1u64; MAX_DIMS];
    let mut total: u64 = 1;
    for d in dims.iter_mut().take(n_dims) {
        *d = c.u64("a tensor dimension")?;
        if *d == 0 {
            return Err(GgufError::BadDims);
        }
        total = total.checked_mul(*d).ok_or(GgufError::Overflow)?;
    }
    if total > (i64::MAX as u64) {
        return Err(GgufError::Overflow);
    }
    let type_id = c.u32("a tensor type")?;
    let offset = c.u64("a tensor offset")?;
    Ok(TensorHeader {
        name,
        dims,
        n_dims,
        type_id,
        offset,
    })
}

fn align_up(v: u64, a: u64) -> Option<u64> {
    Some(v.checked_add(a - 1)? / a * a)
}
