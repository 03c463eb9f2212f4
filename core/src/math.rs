//! Elementary functions in forms the compiler vectorizes, bit-identical to `libm`'s (they live
//! in the kernel crate, which has no dependencies; this module checks them against `libm`).

pub use trillim_kernels::math::{erff, expf_in_range};

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls `f` on ±every float below `limit` near one of `edges` (4096 values either side)
    /// and on every `stride`-th one elsewhere.
    fn sweep(limit: u32, edges: &[u32], stride: u32, f: impl Fn(f32)) {
        let mut bits = 0u32;
        while bits < limit {
            f(f32::from_bits(bits));
            f(-f32::from_bits(bits));
            let near = edges.iter().any(|&t| bits.abs_diff(t) < 4096);
            bits += if near { 1 } else { stride };
        }
    }

    #[test]
    fn expf_in_range_is_libm_bit_for_bit() {
        // The reduction thresholds.
        let edges = [0x3900_0000, 0x3eb1_7218, 0x3f85_1592];
        sweep(87.0f32.to_bits(), &edges, 61, |x| {
            assert_eq!(expf_in_range(x).to_bits(), libm::expf(x).to_bits(), "{x:e}");
        });
    }

    #[test]
    fn erff_is_libm_bit_for_bit() {
        // The range edges.
        let edges = [
            0x3180_0000,
            0x3f58_0000,
            0x3fa0_0000,
            0x4036_db6d,
            0x40c0_0000,
        ];
        sweep(0x7f80_0000, &edges, 97, |x| {
            assert_eq!(erff(x).to_bits(), libm::erff(x).to_bits(), "{x:e}");
        });
        for x in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            assert_eq!(erff(x).to_bits(), libm::erff(x).to_bits());
        }
    }
}
