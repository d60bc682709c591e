//! Character error rate, the measure the speech tests and benchmarks use for Chinese
//! (which has no word boundaries to count word errors by).

use crate::guard::bare;

/// Edit distance between `reference` and `hypothesis` in characters, punctuation and
/// spaces ignored, divided by the reference's length. 0 is perfect; above 1 is possible
/// when the hypothesis is longer than the reference (a loop).
pub fn cer(reference: &str, hypothesis: &str) -> f64 {
    let r: Vec<char> = bare(reference).chars().collect();
    let h: Vec<char> = bare(hypothesis).chars().collect();
    if r.is_empty() {
        return if h.is_empty() { 0.0 } else { 1.0 };
    }
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    let mut cur = vec![0; h.len() + 1];
    for (i, rc) in r.iter().enumerate() {
        cur[0] = i + 1;
        for (j, hc) in h.iter().enumerate() {
            let sub = prev[j] + usize::from(rc != hc);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[h.len()] as f64 / r.len() as f64
}

#[cfg(test)]
mod tests {
    use super::cer;

    #[test]
    fn counts_substitutions_insertions_and_deletions_per_reference_character() {
        assert_eq!(cer("着火了", "着火了。"), 0.0);
        assert!((cer("我家着火了", "我家找火了") - 0.2).abs() < 1e-9);
        assert!((cer("停水", "停水两天") - 1.0).abs() < 1e-9);
        assert!((cer("停水两天", "停水") - 0.5).abs() < 1e-9);
    }
}
