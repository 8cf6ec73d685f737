//! LSH banding over MinHash signatures: parameter choice, candidate pairs, and a
//! reference index for contamination checks.
use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Buckets larger than this are not expanded into all pairs: each member is paired
/// with the bucket's first member and with its predecessor (a star plus a chain), so a
/// bucket of k rows costs O(k) pairs instead of O(k²).
pub const MAX_FULL_BUCKET: usize = 48;
/// At most this many reference rows are taken from one band bucket per query.
pub const MAX_REF_PER_BUCKET: usize = 256;

/// Composite Simpson integration with `n` (even) intervals.
fn simpson<F: Fn(f64) -> f64>(f: F, a: f64, b: f64, n: usize) -> f64 {
    if b <= a {
        return 0.0;
    }
    let h = (b - a) / n as f64;
    let mut s = f(a) + f(b);
    for i in 1..n {
        let x = a + i as f64 * h;
        s += if i % 2 == 1 { 4.0 } else { 2.0 } * f(x);
    }
    s * h / 3.0
}

/// Probability that a pair at Jaccard `s` shares at least one band.
pub fn collision_probability(s: f64, bands: usize, rows: usize) -> f64 {
    1.0 - (1.0 - s.powf(rows as f64)).powf(bands as f64)
}

pub fn false_positive_probability(threshold: f64, b: usize, r: usize) -> f64 {
    simpson(|s| collision_probability(s, b, r), 0.0, threshold, 512)
}

pub fn false_negative_probability(threshold: f64, b: usize, r: usize) -> f64 {
    simpson(
        |s| 1.0 - collision_probability(s, b, r),
        threshold,
        1.0,
        512,
    )
}

/// datasketch's `_optimal_param`: the (bands, rows) with `bands*rows <= num_perm`
/// minimising `fp_weight*FP + fn_weight*FN` (integrated probabilities).
pub fn optimal_param(
    threshold: f64,
    num_perm: usize,
    fp_weight: f64,
    fn_weight: f64,
) -> (usize, usize) {
    let mut best = (0usize, 0usize);
    let mut min_error = f64::INFINITY;
    for b in 1..=num_perm {
        for r in 1..=(num_perm / b) {
            let fp = false_positive_probability(threshold, b, r);
            let fnp = false_negative_probability(threshold, b, r);
            let err = fp * fp_weight + fnp * fn_weight;
            if err < min_error {
                min_error = err;
                best = (b, r);
            }
        }
    }
    best
}

#[inline]
fn band_key(sig: &[u32], band: usize, rows: usize) -> u64 {
    let slice = &sig[band * rows..(band + 1) * rows];
    // SAFETY: an initialised u32 slice is a valid u8 slice of 4x the length (u8 has
    // alignment 1).
    let bytes = unsafe {
        std::slice::from_raw_parts(slice.as_ptr() as *const u8, std::mem::size_of_val(slice))
    };
    xxh3_64_with_seed(bytes, band as u64)
}

/// Candidate pairs `(i, j)` with `i < j` among rows flagged `active`, from LSH banding
/// of the flat signature matrix `sigs` (`n * num_perm`). Sorted and deduplicated.
pub fn candidate_pairs(
    sigs: &[u32],
    num_perm: usize,
    active: &[bool],
    bands: usize,
    rows: usize,
) -> Vec<(u32, u32)> {
    assert!(bands * rows <= num_perm, "bands*rows must be <= num_perm");
    let n = active.len();
    let mut pairs: Vec<u64> = Vec::new();
    let mut keys: Vec<(u64, u32)> = Vec::with_capacity(n);
    for band in 0..bands {
        keys.clear();
        keys.par_extend((0..n).into_par_iter().filter(|&i| active[i]).map(|i| {
            (
                band_key(&sigs[i * num_perm..(i + 1) * num_perm], band, rows),
                i as u32,
            )
        }));
        keys.par_sort_unstable();
        let mut start = 0;
        while start < keys.len() {
            let mut end = start + 1;
            while end < keys.len() && keys[end].0 == keys[start].0 {
                end += 1;
            }
            let group = &keys[start..end];
            let k = group.len();
            if k > 1 {
                if k <= MAX_FULL_BUCKET {
                    for x in 0..k {
                        for y in (x + 1)..k {
                            pairs.push(pack(group[x].1, group[y].1));
                        }
                    }
                } else {
                    for y in 1..k {
                        pairs.push(pack(group[0].1, group[y].1));
                        if y >= 2 {
                            pairs.push(pack(group[y - 1].1, group[y].1));
                        }
                    }
                }
            }
            start = end;
        }
        // Keep memory bounded: deduplicate as we go when the buffer grows.
        if pairs.len() > (1 << 24) {
            pairs.par_sort_unstable();
            pairs.dedup();
        }
    }
    pairs.par_sort_unstable();
    pairs.dedup();
    pairs.into_iter().map(unpack).collect()
}

#[inline]
fn pack(a: u32, b: u32) -> u64 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    ((lo as u64) << 32) | hi as u64
}

#[inline]
fn unpack(p: u64) -> (u32, u32) {
    ((p >> 32) as u32, p as u32)
}

/// Band index over a reference signature set.
pub struct ReferenceIndex {
    pub num_perm: usize,
    pub bands: usize,
    pub rows: usize,
    /// Per band: sorted (key, ref row).
    tables: Vec<Vec<(u64, u32)>>,
}

impl ReferenceIndex {
    pub fn build(
        sigs: &[u32],
        num_perm: usize,
        active: &[bool],
        bands: usize,
        rows: usize,
    ) -> Self {
        assert!(bands * rows <= num_perm, "bands*rows must be <= num_perm");
        let n = active.len();
        let tables = (0..bands)
            .map(|band| {
                let mut t: Vec<(u64, u32)> = (0..n)
                    .into_par_iter()
                    .filter(|&i| active[i])
                    .map(|i| {
                        (
                            band_key(&sigs[i * num_perm..(i + 1) * num_perm], band, rows),
                            i as u32,
                        )
                    })
                    .collect();
                t.par_sort_unstable();
                t
            })
            .collect();
        ReferenceIndex {
            num_perm,
            bands,
            rows,
            tables,
        }
    }

    /// Reference rows sharing at least one band with `sig` (deduplicated).
    pub fn query(&self, sig: &[u32], out: &mut Vec<u32>) {
        out.clear();
        for (band, table) in self.tables.iter().enumerate() {
            let key = band_key(sig, band, self.rows);
            let start = table.partition_point(|e| e.0 < key);
            out.extend(
                table[start..]
                    .iter()
                    .take_while(|e| e.0 == key)
                    .take(MAX_REF_PER_BUCKET)
                    .map(|e| e.1),
            );
        }
        out.sort_unstable();
        out.dedup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimal_param_matches_datasketch() {
        // Values from datasketch.lsh._optimal_param(t, n, 0.5, 0.5) (scipy quad).
        let cases = [
            (0.5, 64, (14, 4)),
            (0.5, 128, (25, 5)),
            (0.7, 128, (14, 9)),
            (0.8, 64, (5, 11)),
            (0.8, 128, (9, 13)),
            (0.8, 256, (17, 15)),
            (0.9, 128, (5, 25)),
            (0.95, 128, (3, 42)),
        ];
        for (t, n, want) in cases {
            assert_eq!(optimal_param(t, n, 0.5, 0.5), want, "t={t} n={n}");
        }
    }

    #[test]
    fn identical_rows_are_candidates() {
        let p = 8;
        let mut sigs = vec![0u32; 4 * p];
        for (i, v) in sigs.iter_mut().enumerate() {
            *v = (i % p) as u32 + if i / p == 3 { 100 } else { 0 };
        }
        let pairs = candidate_pairs(&sigs, p, &[true, true, false, true], 2, 4);
        assert_eq!(pairs, vec![(0, 1)]);
    }
}
