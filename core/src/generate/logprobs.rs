//! Log-probabilities of a sampled token and its best alternatives, over the raw logits (before
//! penalties and temperature), as OpenAI's `logprobs` report them.

/// Fills `top` with the `top.len()` most likely tokens of `logits` (best first, ties to the
/// lower id) and returns the log-probability of `id` (`None` when `id` is outside the row).
/// Everything is computed in `f64` from one log-sum-exp.
pub fn logprobs(logits: &[f32], id: u32, top: &mut [(u32, f64)]) -> Option<f64> {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&v| libm::exp(v as f64 - m)).sum();
    let lse = libm::log(sum) + m;
    let k = top.len().min(logits.len());
    let mut len = 0;
    for (i, &v) in logits.iter().enumerate() {
        let v = v as f64;
        if len == k && (k == 0 || v <= top[k - 1].1) {
            continue;
        }
        // Insert after every entry that is at least as large (stable: lower ids first).
        let pos = top[..len].partition_point(|&(_, b)| b >= v);
        let end = if len < k { len } else { k - 1 };
        top.copy_within(pos..end, pos + 1);
        top[pos] = (i as u32, v);
        len = (len + 1).min(k);
    }
    for t in &mut top[..len] {
        t.1 -= lse;
    }
    logits.get(id as usize).map(|&v| v as f64 - lse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_sorted_and_stable() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, -1.0];
        let mut top = [(0u32, 0f64); 3];
        let lp = logprobs(&logits, 2, &mut top).unwrap();
        assert_eq!([top[0].0, top[1].0, top[2].0], [1, 3, 2]);
        assert!((top[2].1 - lp).abs() < 1e-12);
        // The probabilities of every token sum to one.
        let total: f64 = (0..logits.len() as u32)
            .map(|id| libm::exp(logprobs(&logits, id, &mut []).unwrap()))
            .sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");
        // And match a direct softmax: p(1) = e^3 / (e^1 + 2e^3 + e^2 + e^-1).
        let e = libm::exp;
        let want = libm::log(e(3.0) / (e(1.0) + 2.0 * e(3.0) + e(2.0) + e(-1.0)));
        assert!((top[0].1 - want).abs() < 1e-12);
        assert_eq!(logprobs(&logits, 9, &mut []), None);
        let mut wide = [(0u32, 0f64); 8];
        logprobs(&logits, 0, &mut wide);
        assert_eq!(wide[4].0, 4);
    }
}
