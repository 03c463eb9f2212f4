//! The GGUF reader on hand-built files: every value type, nesting, alignment, versions.
#![forbid(unsafe_code)]

use trillim_core::format::gguf::{Gguf, GgufError, Value};
use trillim_tests::{GgufBuilder, Meta};

fn all_types() -> GgufBuilder {
    GgufBuilder::new()
        .meta("u8", Meta::U8(200))
        .meta("i8", Meta::I8(-100))
        .meta("u16", Meta::U16(60000))
        .meta("i16", Meta::I16(-30000))
        .meta("u32", Meta::U32(4_000_000_000))
        .meta("i32", Meta::I32(-2_000_000_000))
        .meta("f32", Meta::F32(1.5))
        .meta("bool", Meta::Bool(true))
        .meta("str", Meta::Str("héllo".into()))
        .meta("u64", Meta::U64(u64::MAX))
        .meta("i64", Meta::I64(i64::MIN))
        .meta("f64", Meta::F64(-2.25))
        .meta(
            "floats",
            Meta::Array(6, vec![Meta::F32(0.5), Meta::F32(-1.0)]),
        )
        .meta(
            "strings",
            Meta::Array(8, vec![Meta::Str("a".into()), Meta::Str("bc".into())]),
        )
        .meta(
            "nested",
            Meta::Array(
                9,
                vec![
                    Meta::Array(4, vec![Meta::U32(1), Meta::U32(2)]),
                    Meta::Array(4, vec![]),
                ],
            ),
        )
        .tensor("w", &[32, 2], 0, vec![0; 32 * 2 * 4])
        .tensor("odd", &[32], 16, vec![7; 144]) // IQ2_XXS: listed, not loadable here
}

#[test]
fn reads_every_value_type() {
    for version in [2, 3] {
        let mut b = all_types();
        b.version = version;
        let bytes = b.build();
        let g = Gguf::parse(&bytes).unwrap();
        assert_eq!(g.version, version);
        assert_eq!(g.get_u64("u8"), Some(200));
        assert!(matches!(g.get("i8"), Some(Value::Int(-100))));
        assert_eq!(g.get_u64("u16"), Some(60000));
        assert!(matches!(g.get("i16"), Some(Value::Int(-30000))));
        assert_eq!(g.get_u64("u32"), Some(4_000_000_000));
        assert!(matches!(g.get("i32"), Some(Value::Int(-2_000_000_000))));
        assert_eq!(g.get_f64("f32"), Some(1.5));
        assert_eq!(g.get("bool").and_then(|v| v.as_bool()), Some(true));
        assert_eq!(g.get_str("str"), Some("héllo"));
        assert_eq!(g.get_u64("u64"), Some(u64::MAX));
        assert!(matches!(g.get("i64"), Some(Value::Int(v)) if v == i64::MIN as i128));
        assert_eq!(g.get_f64("f64"), Some(-2.25));
        let floats = g.get_array("floats").unwrap();
        assert_eq!((floats.len(), floats.f32_at(1)), (2, Some(-1.0)));
        let strings = g.get_array("strings").unwrap();
        let got: Vec<&str> = strings.iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(got, ["a", "bc"]);
        assert_eq!(strings.get(1).unwrap().as_str(), Some("bc"));
        let nested = g.get_array("nested").unwrap();
        let inner = nested.get(0).unwrap().as_array().unwrap();
        assert_eq!(inner.get(1).unwrap().as_u64(), Some(2));
        assert!(nested.get(1).unwrap().as_array().unwrap().is_empty());
        assert_eq!(g.metadata().count(), 15);
        let w = g.tensor("w").unwrap();
        assert_eq!((w.row_len(), w.n_rows(), w.data.len()), (32, 2, 256));
        assert_eq!(w.data.as_ptr() as usize % 32, bytes.as_ptr() as usize % 32);
        let odd = g.tensor("odd").unwrap();
        assert!(odd.ty.is_none() && odd.data.is_empty());
    }
}

#[test]
fn honours_general_alignment() {
    let mut b = GgufBuilder::new()
        .meta("general.alignment", Meta::U32(64))
        .tensor("a", &[32], 0, vec![1; 128])
        .tensor("b", &[32], 0, vec![2; 128]);
    b.alignment = 64;
    let bytes = b.build();
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.alignment(), 64);
    assert_eq!(g.data_offset() % 64, 0);
    assert!(g.tensor("b").unwrap().data.iter().all(|&x| x == 2));
    let bad = GgufBuilder::new()
        .meta("general.alignment", Meta::U32(48))
        .build();
    assert_eq!(Gguf::parse(&bad).unwrap_err(), GgufError::BadAlignment);
}

#[test]
fn rejects_out_of_bounds_and_misaligned_tensors() {
    let mut b = GgufBuilder::new().tensor("a", &[32], 0, vec![0; 128]);
    let mut bytes = b.build();
    bytes.truncate(bytes.len() - 1);
    assert_eq!(Gguf::parse(&bytes).unwrap_err(), GgufError::DataOutOfBounds);
    b = GgufBuilder::new().tensor("a", &[0], 0, vec![]);
    assert_eq!(Gguf::parse(&b.build()).unwrap_err(), GgufError::BadDims);
    b = GgufBuilder::new().tensor("a", &[u64::MAX, 4], 0, vec![]);
    assert_eq!(Gguf::parse(&b.build()).unwrap_err(), GgufError::Overflow);
    b = GgufBuilder::new().tensor("a", &[31], 8, vec![0; 64]); // Q8_0 rows must be 32-blocks
    assert_eq!(Gguf::parse(&b.build()).unwrap_err(), GgufError::BadDims);
    let deep = (0..6).fold(Meta::Array(4, vec![]), |m, _| Meta::Array(9, vec![m]));
    let b = GgufBuilder::new().meta("deep", deep).build();
    assert_eq!(Gguf::parse(&b).unwrap_err(), GgufError::TooDeep);
    let bad_type = GgufBuilder::new().meta("x", Meta::U8(0)).build();
    let mut bytes = bad_type;
    let pos = 24 + 8 + 1; // header, key length, key "x"
    bytes[pos..pos + 4].copy_from_slice(&99u32.to_le_bytes());
    assert_eq!(
        Gguf::parse(&bytes).unwrap_err(),
        GgufError::BadValueType(99)
    );
}
