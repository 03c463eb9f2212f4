//! Elementary functions in forms the compiler vectorizes, bit-identical to `libm`'s (they live
//! in the kernel crate, which has no dependencies; this module checks them against `libm`).

pub use trillim_kernels::math::{erff, expf_in_range};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expf_in_range_is_libm_bit_for_bit() {
        let limit = 87.0f32.to_bits();
        let mut bits = 0u32;
        while bits < limit {
            for x in [f32::from_bits(bits), -f32::from_bits(bits)] {
                assert_eq!(expf_in_range(x).to_bits(), libm::expf(x).to_bits(), "{x:e}");
            }
            // Every value near the reduction thresholds, a stride elsewhere.
            let near = [0x3900_0000u32, 0x3eb1_7218, 0x3f85_1592]
                .iter()
                .any(|&t| bits.abs_diff(t) < 4096);
            bits += if near { 1 } else { 61 };
        }
    }

    #[test]
    fn erff_is_libm_bit_for_bit() {
        let mut bits = 0u32;
        while bits < 0x7f80_0000 {
            for x in [f32::from_bits(bits), -f32::from_bits(bits)] {
                assert_eq!(erff(x).to_bits(), libm::erff(x).to_bits(), "{x:e}");
            }
            // Every value near the range edges, a stride elsewhere.
            let near = [
                0x3180_0000u32,
                0x3f58_0000,
                0x3fa0_0000,
                0x4036_db6d,
                0x40c0_0000,
            ]
            .iter()
            .any(|&t| bits.abs_diff(t) < 4096);
            bits += if near { 1 } else { 97 };
        }
        for x in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            assert_eq!(erff(x).to_bits(), libm::erff(x).to_bits());
        }
    }
}
