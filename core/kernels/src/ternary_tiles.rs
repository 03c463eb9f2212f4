//! Ternary weights (TQ1_0, TQ2_0, I2_S) repacked into 16-row tiles of base-3 triples, for
//! byte-permute kernels.
//!
//! TQ1_0 stores five ternary weights per byte in base 3. Reading a weight back costs a
//! multiply and a compare per digit, which makes the plain TQ1_0 kernels compute-bound: on a
//! core that streams TQ2_0 at memory speed they decode TQ1_0 at a third of it. This layout
//! stores every three consecutive weights as one 5-bit index (27 used values), which one byte
//! permute per weight position (`vpermb`) turns into codes for 64 weights of 16 rows at once:
//! 57 bytes per 256 weights, against 54 for TQ1_0, 66 for TQ2_0 and 64 for I2_S. Decoding is
//! as cheap as TQ2_0's, so a memory-bound decode reads 14 % fewer bytes than with TQ2_0.
//!
//! # Layout
//!
//! Rows are taken sixteen at a time (a *tile*; the row count must be a multiple of 16). A tile
//! stores its 256-weight blocks one after another, [`TILE_BLOCK_BYTES`] (16 × 57) bytes each:
//!
//! * bytes `0..32`: the sixteen rows' f16 block scales, in row order;
//! * bytes `32..736`: eleven 64-byte vectors of index nibbles;
//! * bytes `736..912`: twenty-two little-endian `u64` masks of fifth index bits.
//!
//! A block has two halves of 128 weights (one activation block each). A half is 43 *triples*
//! (weights `3g, 3g + 1, 3g + 2`; the last has only weights 126 and 127) plus one padding
//! triple, taken four at a time in 11 *steps*; the block's 22 steps are numbered half 0's
//! first. Step `s` holds 64 indices: lane `4r + i` is row `r`'s triple `4 (s mod 11) + i`. Its
//! low four bits are the low (`s` even) or high (`s` odd) nibble of byte `4r + i` of nibble
//! vector `s / 2`; its fifth bit is bit `4r + i` of mask `s`.
//!
//! A triple whose weights have codes `c0, c1, c2` (weight + 1, so 0..=2; 1 for padding) has
//! index `c0 + 3 c1 + 9 c2`.
//!
//! # Kernels
//!
//! Code `j` of every triple of a step meets activation `3g + j`, so a kernel first *permutes*
//! each 128-element activation block into three planes of 44 ([`PERMUTED_HALF`] bytes): plane
//! `j` element `g` is activation `3g + j` (0 past the block). Step `s`'s codes for position
//! `j` then pair with the four plane-`j` activations `4 (s mod 11) ..` in every 32-bit lane,
//! exactly as `vpdpbusd` with a broadcast operand wants. Integer block sums are exact and each
//! row's `f32` accumulator adds the halves in order with the same products, so every kernel
//! over this layout is bit-identical to [`crate::scalar::matvec_tq1_0`] (or `_tq2_0`, or
//! `_i2s`, whose tiles carry the scale 1) over the original rows.

use crate::act::ActQ8;
use crate::f16::le_f16;
use crate::formats::{i2s_group_ternary, tq1_0_block_ternary, tq2_0_block_ternary, WeightType};

/// Rows per tile.
pub const TILE_ROWS: usize = 16;
/// Bytes of one 256-weight block of one tile (sixteen rows).
pub const TILE_BLOCK_BYTES: usize = 912;
/// Bytes per row per 256-weight block (the layout's row size is `57 · cols / 256`).
pub const ROW_BLOCK_BYTES: usize = TILE_BLOCK_BYTES / TILE_ROWS;
/// Offset of the nibble vectors in a tile block.
pub const NIBBLES_OFFSET: usize = 32;
/// Offset of the fifth-bit masks in a tile block.
pub const BITS_OFFSET: usize = 736;
/// Triples per half block, padding included.
pub const TRIPLES: usize = 44;
/// Steps per half block.
pub const HALF_STEPS: usize = 11;
/// Bytes of one permuted 128-element activation block (three planes of [`TRIPLES`]).
pub const PERMUTED_HALF: usize = 3 * TRIPLES;

/// Bytes the tiled layout takes for a `rows × cols` TQ1_0 matrix, or `None` when the shape
/// cannot be tiled (`rows` not a multiple of 16, `cols` not a multiple of 256).
pub fn tiled_bytes(rows: usize, cols: usize) -> Option<usize> {
    if rows % TILE_ROWS != 0 || cols % 256 != 0 || rows == 0 {
        return None;
    }
    (rows / TILE_ROWS)
        .checked_mul(cols / 256)?
        .checked_mul(TILE_BLOCK_BYTES)
}

/// Code of weight `3g + j` of half `h` in `codes`, 1 (weight 0) past the half.
#[inline]
fn triple_code(codes: &[u8; 256], h: usize, g: usize, j: usize) -> u8 {
    let k = 3 * g + j;
    if k < 128 {
        codes[128 * h + k]
    } else {
        1
    }
}

/// Why a matrix cannot be tiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepackError {
    /// The type has no tiled form (only TQ1_0, TQ2_0 and I2_S do).
    Type(WeightType),
    /// The shape is not whole tiles (rows a multiple of 16, columns of 256).
    Shape,
    /// A 2-bit code is 3 (weight +2): the matrix is not ternary.
    NotTernary,
}

/// The types [`repack`] takes.
pub fn can_tile(ty: WeightType) -> bool {
    matches!(ty, WeightType::TQ1_0 | WeightType::TQ2_0 | WeightType::I2S)
}

/// Writes the codes (weight + 1) of 256-weight block `b` of a row of `ty` and returns its f16
/// scale bits (1.0 for I2_S, whose scale is per tensor), or `None` if a 2-bit code is 3.
fn block_of(ty: WeightType, row: &[u8], b: usize, out: &mut [u8; 256]) -> Option<[u8; 2]> {
    let bb = ty.block_bytes();
    let mut t = [0i8; 256];
    let scale = match ty {
        WeightType::TQ1_0 => {
            let blk = &row[b * bb..][..bb];
            tq1_0_block_ternary(blk, &mut t);
            [blk[52], blk[53]]
        }
        WeightType::TQ2_0 => {
            let blk = &row[b * bb..][..bb];
            if has_code_3(&blk[..64]) {
                return None;
            }
            tq2_0_block_ternary(blk, &mut t);
            [blk[64], blk[65]]
        }
        _ => {
            // Two 128-weight I2_S groups.
            let blk = &row[b * 2 * bb..][..2 * bb];
            if has_code_3(blk) {
                return None;
            }
            for (g, t) in t.chunks_exact_mut(128).enumerate() {
                i2s_group_ternary(&blk[32 * g..32 * g + 32], t);
            }
            crate::f16::f32_to_f16(1.0).to_le_bytes()
        }
    };
    for (o, &v) in out.iter_mut().zip(&t) {
        *o = (v + 1) as u8;
    }
    Some(scale)
}

/// True if a byte of 2-bit codes holds a 3 (both bits of a field set).
fn has_code_3(codes: &[u8]) -> bool {
    codes.iter().any(|&x| x & (x >> 1) & 0x55 != 0)
}

/// Repacks a `rows × cols` matrix of ternary type `ty` (`src`, rows back to back, without an
/// I2_S scale tail) into the tiled layout (`dst`, [`tiled_bytes`] long). Any row range that
/// starts at a multiple of 16 can be repacked on its own into the matching range of `dst`.
/// On error `dst` holds unspecified bytes.
///
/// # Panics
/// If a slice has the wrong length for the shape.
pub fn repack(
    ty: WeightType,
    src: &[u8],
    rows: usize,
    cols: usize,
    dst: &mut [u8],
) -> Result<(), RepackError> {
    TileLayout::Tiles16.repack(ty, src, rows, cols, dst)
}

/// [`repack`]'s writer, for arguments already checked (`rb` source bytes per row).
fn write_tiles(
    ty: WeightType,
    src: &[u8],
    cols: usize,
    rb: usize,
    dst: &mut [u8],
) -> Result<(), RepackError> {
    let nb = cols / 256;
    let mut codes = [[0u8; 256]; TILE_ROWS];
    for (t, tile) in dst.chunks_exact_mut(nb * TILE_BLOCK_BYTES).enumerate() {
        for (b, out) in tile.chunks_exact_mut(TILE_BLOCK_BYTES).enumerate() {
            for (r, c) in codes.iter_mut().enumerate() {
                let row = &src[(TILE_ROWS * t + r) * rb..][..rb];
                let scale = block_of(ty, row, b, c).ok_or(RepackError::NotTernary)?;
                out[2 * r..2 * r + 2].copy_from_slice(&scale);
            }
            for s in 0..2 * HALF_STEPS {
                let (h, st) = (s / HALF_STEPS, s % HALF_STEPS);
                let mut bits = 0u64;
                for (r, c) in codes.iter().enumerate() {
                    for i in 0..4 {
                        let g = 4 * st + i;
                        let idx = triple_code(c, h, g, 0)
                            + 3 * triple_code(c, h, g, 1)
                            + 9 * triple_code(c, h, g, 2);
                        let lane = 4 * r + i;
                        let byte = &mut out[NIBBLES_OFFSET + 64 * (s / 2) + lane];
                        if s % 2 == 0 {
                            *byte = (*byte & 0xf0) | (idx & 0xf);
                        } else {
                            *byte = (*byte & 0x0f) | ((idx & 0xf) << 4);
                        }
                        bits |= ((idx >> 4) as u64 & 1) << lane;
                    }
                }
                out[BITS_OFFSET + 8 * s..BITS_OFFSET + 8 * s + 8]
                    .copy_from_slice(&bits.to_le_bytes());
            }
        }
    }
    Ok(())
}

/// The layout a kernel table reads repacked ternary projections in (see
/// [`crate::TileKernels`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileLayout {
    /// This module's 16-row tiles of base-3 triples, from TQ1_0, TQ2_0 and I2_S, for
    /// byte-permute (AVX-512 VBMI) kernels.
    Tiles16,
    /// TQ1_0 rows re-encoded as TQ2_0 blocks with the same weights and scales, for paths
    /// without byte permutes: 2-bit codes unpack with a shift and a mask where base-3 digits
    /// take multiplies, so TQ1_0 runs at TQ2_0's speed for 22 % more bytes. The TQ2_0 kernels'
    /// integer sums equal TQ1_0's (`Σ (t + 1) · a − Σ a = Σ t · a`) and their float steps are the
    /// same, so the results are bit-identical to [`crate::scalar::matvec_tq1_0`].
    Tq2Rows,
}

impl TileLayout {
    /// Whether matrices of `ty` are repacked into this layout.
    pub fn can_tile(self, ty: WeightType) -> bool {
        match self {
            TileLayout::Tiles16 => can_tile(ty),
            TileLayout::Tq2Rows => ty == WeightType::TQ1_0,
        }
    }

    /// Bytes this layout takes for a `rows × cols` matrix, or `None` when the shape is not
    /// whole 16-row groups of 256-weight blocks.
    pub fn tiled_bytes(self, rows: usize, cols: usize) -> Option<usize> {
        match self {
            TileLayout::Tiles16 => tiled_bytes(rows, cols),
            TileLayout::Tq2Rows => {
                if rows % TILE_ROWS != 0 || cols % 256 != 0 || rows == 0 {
                    return None;
                }
                rows.checked_mul(cols / 256)?
                    .checked_mul(crate::formats::TQ2_0_BLOCK_BYTES)
            }
        }
    }

    /// Repacks a `rows × cols` matrix of `ty` into this layout, as [`repack`] does for
    /// [`TileLayout::Tiles16`]; any row range starting at a multiple of 16 repacks on its own.
    ///
    /// # Panics
    /// If a slice has the wrong length for the shape.
    pub fn repack(
        self,
        ty: WeightType,
        src: &[u8],
        rows: usize,
        cols: usize,
        dst: &mut [u8],
    ) -> Result<(), RepackError> {
        if !self.can_tile(ty) {
            return Err(RepackError::Type(ty));
        }
        let total = self.tiled_bytes(rows, cols).ok_or(RepackError::Shape)?;
        let rb = ty.row_bytes(cols).ok_or(RepackError::Shape)?;
        assert_eq!(src.len(), rows * rb, "source length");
        assert_eq!(dst.len(), total, "destination length");
        if self == TileLayout::Tiles16 {
            return write_tiles(ty, src, cols, rb, dst);
        }
        let bb = crate::formats::TQ1_0_BLOCK_BYTES;
        let mut t = [0i8; 256];
        for (blk, out) in src
            .chunks_exact(bb)
            .zip(dst.chunks_exact_mut(crate::formats::TQ2_0_BLOCK_BYTES))
        {
            tq1_0_block_ternary(blk, &mut t);
            crate::formats::tq2_0_block_from_ternary(&t, [blk[52], blk[53]], out);
        }
        Ok(())
    }

    /// A short name (cache file names, reports).
    pub fn name(self) -> &'static str {
        match self {
            TileLayout::Tiles16 => "tiles16",
            TileLayout::Tq2Rows => "tq2",
        }
    }
}

/// Index of lane `lane` of step `s` in a tile block.
#[inline]
pub fn step_index(block: &[u8], s: usize, lane: usize) -> u8 {
    let byte = block[NIBBLES_OFFSET + 64 * (s / 2) + lane];
    let nib = if s % 2 == 0 { byte & 0xf } else { byte >> 4 };
    let bits = &block[BITS_OFFSET + 8 * s..BITS_OFFSET + 8 * s + 8];
    let hi = (bits[lane / 8] >> (lane % 8)) & 1;
    nib | (hi << 4)
}

/// Code `j` (0..=2) of a triple index.
#[inline]
pub const fn index_code(idx: u8, j: usize) -> u8 {
    const DIV: [u8; 3] = [1, 3, 9];
    (idx / DIV[j]) % 3
}

/// Permutes one 128-element activation block into three planes (see the module docs).
pub fn permute_half(q: &[i8], out: &mut [i8]) {
    for j in 0..3 {
        for g in 0..TRIPLES {
            let k = 3 * g + j;
            out[TRIPLES * j + g] = if k < 128 { q[k] } else { 0 };
        }
    }
}

/// Decodes lane row `r` (0..16) of a tile block back to its 256 ternary weights.
fn block_ternary(blk: &[u8], r: usize, out: &mut [i8; 256]) {
    for h in 0..2 {
        for g in 0..TRIPLES {
            let idx = step_index(blk, HALF_STEPS * h + g / 4, 4 * r + g % 4);
            for j in 0..3 {
                let k = 3 * g + j;
                if k < 128 {
                    out[128 * h + k] = index_code(idx, j) as i8 - 1;
                }
            }
        }
    }
}

/// Tiled ternary weights × 128-blocks of int8 activations (scalar reference): `w` holds
/// `out.len() / 16` tiles of `row_bytes = 57 · cols / 256` bytes per row.
///
/// # Panics
/// If `out.len()` is not a multiple of 16 or a slice is too short.
pub fn matvec(w: &[u8], row_bytes: usize, a: &ActQ8<'_>, out: &mut [f32]) {
    assert_eq!(out.len() % TILE_ROWS, 0, "rows must be whole tiles");
    let nb = row_bytes / ROW_BLOCK_BYTES;
    let tile_bytes = TILE_ROWS * row_bytes;
    let mut t = [0i8; 256];
    for (ti, o) in out.chunks_exact_mut(TILE_ROWS).enumerate() {
        let tile = &w[ti * tile_bytes..(ti + 1) * tile_bytes];
        for (r, o) in o.iter_mut().enumerate() {
            let mut acc = 0f32;
            for (b, blk) in tile.chunks_exact(TILE_BLOCK_BYTES).take(nb).enumerate() {
                block_ternary(blk, r, &mut t);
                for (h, th) in t.chunks_exact(128).enumerate() {
                    let ab = 2 * b + h;
                    let q = &a.qs[ab * 128..ab * 128 + 128];
                    let isum: i32 = th.iter().zip(q).map(|(&w, &x)| w as i32 * x as i32).sum();
                    acc += (le_f16(blk, 2 * r) * a.d[ab]) * isum as f32;
                }
            }
            *o = acc;
        }
    }
}

crate::scalar::gemm_from_matvec!(pub gemm, matvec);

/// Decodes row `r` of a tiled matrix back to ternary values (tests, debugging).
pub fn row_ternary(w: &[u8], row_bytes: usize, r: usize, out: &mut [i8]) {
    let tile_bytes = TILE_ROWS * row_bytes;
    let tile = &w[(r / TILE_ROWS) * tile_bytes..][..tile_bytes];
    let mut t = [0i8; 256];
    for (blk, o) in tile
        .chunks_exact(TILE_BLOCK_BYTES)
        .zip(out.chunks_exact_mut(256))
    {
        block_ternary(blk, r % TILE_ROWS, &mut t);
        o.copy_from_slice(&t);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::formats::{tq1_0_block_ternary, TQ1_0_BLOCK_BYTES};
    use crate::tests::Rng;
    use std::vec;

    #[test]
    fn repack_round_trips_every_weight() {
        let mut rng = Rng::new(7);
        let (rows, cols) = (32, 512);
        let rb = cols / 256 * TQ1_0_BLOCK_BYTES;
        let src: std::vec::Vec<u8> = (0..rows * rb).map(|_| rng.next() as u8).collect();
        let mut dst = vec![0u8; tiled_bytes(rows, cols).unwrap()];
        repack(WeightType::TQ1_0, &src, rows, cols, &mut dst).unwrap();
        let trb = cols / 256 * ROW_BLOCK_BYTES;
        let mut want = [0i8; 256];
        let mut got = vec![0i8; cols];
        for r in 0..rows {
            row_ternary(&dst, trb, r, &mut got);
            for b in 0..cols / 256 {
                tq1_0_block_ternary(&src[r * rb + b * 54..][..54], &mut want);
                assert_eq!(got[256 * b..256 * b + 256], want[..], "row {r} block {b}");
                let tile = &dst[(r / 16) * 16 * trb + b * TILE_BLOCK_BYTES..];
                assert_eq!(
                    tile[2 * (r % 16)..2 * (r % 16) + 2],
                    src[r * rb + b * 54 + 52..][..2]
                );
            }
        }
    }

    #[test]
    fn only_ternary_matrices_tile() {
        let mut dst = vec![0u8; 912];
        let tq2 = vec![0x55u8; 16 * 66];
        assert_eq!(repack(WeightType::TQ2_0, &tq2, 16, 256, &mut dst), Ok(()));
        let mut bad = tq2.clone();
        bad[5 * 66 + 17] = 0x57; // one code 3
        assert_eq!(
            repack(WeightType::TQ2_0, &bad, 16, 256, &mut dst),
            Err(RepackError::NotTernary)
        );
        let i2s = vec![0xffu8; 16 * 64];
        assert_eq!(
            repack(WeightType::I2S, &i2s, 16, 256, &mut dst),
            Err(RepackError::NotTernary)
        );
        assert_eq!(
            repack(WeightType::Q8_0, &[], 16, 256, &mut dst),
            Err(RepackError::Type(WeightType::Q8_0))
        );
        assert_eq!(
            repack(WeightType::TQ1_0, &[], 8, 256, &mut dst),
            Err(RepackError::Shape)
        );
    }

    #[test]
    fn shapes_that_cannot_be_tiled() {
        assert_eq!(tiled_bytes(16, 256), Some(912));
        assert_eq!(tiled_bytes(2560, 6912), Some(160 * 27 * 912));
        assert_eq!(tiled_bytes(8, 256), None);
        assert_eq!(tiled_bytes(16, 128), None);
        assert_eq!(tiled_bytes(0, 256), None);
    }

    #[test]
    fn permuted_planes() {
        let q: [i8; 128] = core::array::from_fn(|i| i as i8);
        let mut p = [0i8; PERMUTED_HALF];
        permute_half(&q, &mut p);
        assert_eq!(p[..4], [0, 3, 6, 9]);
        assert_eq!(p[TRIPLES..TRIPLES + 2], [1, 4]);
        assert_eq!(p[42], 126);
        assert_eq!(p[TRIPLES + 42], 127);
        assert_eq!((p[43], p[2 * TRIPLES + 42], p[2 * TRIPLES + 43]), (0, 0, 0));
    }
}
