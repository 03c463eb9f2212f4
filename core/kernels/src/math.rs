//! Elementary functions without branches, in forms the compiler vectorizes, bit-identical to
//! `libm`'s (the core crate's tests compare them over the whole range), and the element-wise
//! kernels built on them.

/// `libm::expf` (FreeBSD's `e_expf`) for `|x| < 87` without branches: the same `f32` operations
/// in the same order, so bit-identical to it, in a form the compiler vectorizes.
#[inline(always)]
pub fn expf_in_range(x: f32) -> f32 {
    // libm's constants, as written there.
    #![allow(clippy::excessive_precision)]
    const LN2_HI: f32 = 6.9314575195e-01; // 0x3f317200
    const LN2_LO: f32 = 1.4286067653e-06; // 0x35bfbe8e
    const INV_LN2: f32 = 1.4426950216e+00; // 0x3fb8aa3b
    const P1: f32 = 1.6666625440e-1; // 0x3e2aaa8f
    const P2: f32 = -2.7667332906e-3; // 0xbb355215
    let bits = x.to_bits();
    let hx = bits & 0x7fff_ffff;
    let neg = bits >> 31 != 0;
    // Argument reduction x = k·ln2 + r (k = 0 leaves x as it is: x − 0 · LN2_HI = x).
    let k = if hx > 0x3f85_1592 {
        (INV_LN2 * x + if neg { -0.5 } else { 0.5 }) as i32
    } else if hx > 0x3eb1_7218 {
        if neg {
            -1
        } else {
            1
        }
    } else {
        0
    };
    let kf = k as f32;
    let hi = x - kf * LN2_HI;
    let lo = kf * LN2_LO;
    let r = hi - lo;
    let rr = r * r;
    let c = r - rr * (P1 + rr * P2);
    let y = 1.0 + (r * c / (2.0 - c) - lo + hi);
    // |k| ≤ 126, so 2^k is a normal float and scaling is one multiplication (by 1 for k = 0).
    let scaled = y * f32::from_bits(((0x7f + k) as u32) << 23);
    if hx > 0x3900_0000 {
        scaled
    } else {
        1.0 + x
    }
}

/// `libm::erff` (FreeBSD's `s_erff`) for finite `x` without branches: every range's formula
/// with libm's constants and operation order, the right one selected, so bit-identical to it
/// in a form the compiler vectorizes.
#[inline(always)]
pub fn erff(x: f32) -> f32 {
    // libm's constants, as written there.
    #![allow(clippy::excessive_precision)]
    const ERX: f32 = 8.4506291151e-01;
    const EFX8: f32 = 1.0270333290e+00;
    const PP: [f32; 5] = [
        1.2837916613e-01,
        -3.2504209876e-01,
        -2.8481749818e-02,
        -5.7702702470e-03,
        -2.3763017452e-05,
    ];
    const QQ: [f32; 5] = [
        3.9791721106e-01,
        6.5022252500e-02,
        5.0813062117e-03,
        1.3249473704e-04,
        -3.9602282413e-06,
    ];
    const PA: [f32; 7] = [
        -2.3621185683e-03,
        4.1485610604e-01,
        -3.7220788002e-01,
        3.1834661961e-01,
        -1.1089469492e-01,
        3.5478305072e-02,
        -2.1663755178e-03,
    ];
    const QA: [f32; 6] = [
        1.0642088205e-01,
        5.4039794207e-01,
        7.1828655899e-02,
        1.2617121637e-01,
        1.3637083583e-02,
        1.1984500103e-02,
    ];
    const RA: [f32; 8] = [
        -9.8649440333e-03,
        -6.9385856390e-01,
        -1.0558626175e+01,
        -6.2375331879e+01,
        -1.6239666748e+02,
        -1.8460508728e+02,
        -8.1287437439e+01,
        -9.8143291473e+00,
    ];
    const SA: [f32; 8] = [
        1.9651271820e+01,
        1.3765776062e+02,
        4.3456588745e+02,
        6.4538726807e+02,
        4.2900814819e+02,
        1.0863500214e+02,
        6.5702495575e+00,
        -6.0424413532e-02,
    ];
    const RB: [f32; 7] = [
        -9.8649431020e-03,
        -7.9928326607e-01,
        -1.7757955551e+01,
        -1.6063638306e+02,
        -6.3756646729e+02,
        -1.0250950928e+03,
        -4.8351919556e+02,
    ];
    const SB: [f32; 7] = [
        3.0338060379e+01,
        3.2579251099e+02,
        1.5367296143e+03,
        3.1998581543e+03,
        2.5530502930e+03,
        4.7452853394e+02,
        -2.2440952301e+01,
    ];
    let bits = x.to_bits();
    let ix = bits & 0x7fff_ffff;
    let neg = bits >> 31 != 0;
    // |x| < 0.84375: x + x · P(x²)/Q(x²) (tiny |x| as libm writes it).
    let z = x * x;
    let r = PP[0] + z * (PP[1] + z * (PP[2] + z * (PP[3] + z * PP[4])));
    let s = 1.0 + z * (QQ[0] + z * (QQ[1] + z * (QQ[2] + z * (QQ[3] + z * QQ[4]))));
    let small = x + x * (r / s);
    let tiny = 0.125 * (8.0 * x + EFX8 * x);
    // 0.84375 ≤ |x| < 1.25: erx + P(|x| − 1)/Q(|x| − 1).
    let a = f32::from_bits(ix);
    let s = a - 1.0;
    let p = PA[0] + s * (PA[1] + s * (PA[2] + s * (PA[3] + s * (PA[4] + s * (PA[5] + s * PA[6])))));
    let q = 1.0 + s * (QA[0] + s * (QA[1] + s * (QA[2] + s * (QA[3] + s * (QA[4] + s * QA[5])))));
    let mid = 1.0 - (1.0 - ERX - p / q);
    // 1.25 ≤ |x| < 6: 1 − erfc, erfc from two exponentials (|x| clamped into the range so
    // the lanes that do not use it stay finite).
    let a6 = a.clamp(1.25, 5.9999995);
    let s = 1.0 / (a6 * a6);
    let ra = RA[0]
        + s * (RA[1]
            + s * (RA[2] + s * (RA[3] + s * (RA[4] + s * (RA[5] + s * (RA[6] + s * RA[7]))))));
    let sa = 1.0
        + s * (SA[0]
            + s * (SA[1]
                + s * (SA[2] + s * (SA[3] + s * (SA[4] + s * (SA[5] + s * (SA[6] + s * SA[7])))))));
    let rb =
        RB[0] + s * (RB[1] + s * (RB[2] + s * (RB[3] + s * (RB[4] + s * (RB[5] + s * RB[6])))));
    let sb = 1.0
        + s * (SB[0]
            + s * (SB[1] + s * (SB[2] + s * (SB[3] + s * (SB[4] + s * (SB[5] + s * SB[6]))))));
    let (rr, ss) = if ix < 0x4036_db6d { (ra, sa) } else { (rb, sb) };
    let zz = f32::from_bits(a6.to_bits() & 0xffff_e000);
    let erfc =
        expf_in_range(-zz * zz - 0.5625) * expf_in_range((zz - a6) * (zz + a6) + rr / ss) / a6;
    let big = 1.0 - erfc;
    // |x| ≥ 6: 1 − 2⁻¹²⁰, which is 1.
    let y = if ix < 0x3fa0_0000 {
        mid
    } else if ix < 0x40c0_0000 {
        big
    } else {
        1.0 - f32::from_bits(0x0380_0000)
    };
    let y = if neg { -y } else { y };
    // erf(±∞) = ±1, erf(NaN) = NaN.
    let nonfinite = 1.0 - 2.0 * (neg as u32 as f32) + 1.0 / x;
    if ix >= 0x7f80_0000 {
        nonfinite
    } else if ix < 0x3180_0000 {
        tiny
    } else if ix < 0x3f58_0000 {
        small
    } else {
        y
    }
}

/// The exact (erf) GELU of each element in place: `x/2 · (1 + erf(x/√2))`.
#[inline(always)]
pub fn gelu_erf(x: &mut [f32]) {
    for v in x {
        *v = 0.5 * *v * (1.0 + erff(*v * core::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `e^(scale · (x − max))` of each element in place, returning their sum (softmax numerators
/// and denominator). Arguments below −87, whose values are under 1.7e-38, read as −87; the
/// sum runs in sixteen interleaved lanes.
#[inline(always)]
pub fn exp_shifted(x: &mut [f32], max: f32, scale: f32) -> f32 {
    for v in x.iter_mut() {
        *v = expf_in_range(((*v - max) * scale).max(-87.0));
    }
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}
