//! MinHash signatures.
//!
//! Three modes share one shingling (see [`crate::text`]):
//!
//! * [`Mode::Native`]: a 32-bit hash per shingle (word shingles: xxh3 of each normalised
//!   word, mixed in order over the shingle's words; char shingles: each character's code
//!   point spread by an odd multiplier, mixed in order the same way), then
//!   `num_perm` affine permutations `a*x + b mod 2^32` (`a` odd, so each is a
//!   bijection on u32) drawn from SplitMix64(seed). Vectorised (AVX2 when available).
//! * [`Mode::DatasketchLegacy`]: bit-for-bit datasketch's `scheme="legacy"` (the only
//!   scheme before datasketch 2.0): `x = sha1(shingle)[:4]` little-endian, permutations
//!   from `np.random.RandomState(seed)` (`a ∈ [1, 2^61-1)`, `b ∈ [0, 2^61-1)`, drawn
//!   in pairs), `((a*x + b) mod 2^64) mod (2^61-1)` truncated to 32 bits.
//! * [`Mode::DatasketchAffine32`]: datasketch ≥ 2.0's default `scheme="affine32"`:
//!   `x = fmix32(sha1(shingle)[:4])`, `a = 2*randint(0, 2^31)+1` (num_perm draws), then
//!   `b = randint(0, 2^32)`, `a*x + b mod 2^32`.
//!
//! All signatures are stored as `u32` (every mode's values fit in 32 bits); an empty
//! set has every slot at `u32::MAX`, as datasketch's empty MinHash.
use crate::text::{
    for_each_shingle_with, is_ascii_space, normalize_into, normalized_char_codes, NormalizeOptions,
    Unit,
};
use crate::tokenize::{for_each_token, Lang, Style};
use rayon::prelude::*;
use sha1::{Digest, Sha1};

pub const MERSENNE_61: u64 = (1u64 << 61) - 1;
pub const EMPTY: u32 = u32::MAX;
/// Shingle count above which native mode drops repeated shingle hashes before permuting.
const DEDUP_ABOVE: usize = 2048;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Native,
    DatasketchLegacy,
    DatasketchAffine32,
}

impl Mode {
    pub fn parse(mode: &str, scheme: &str) -> Result<Mode, String> {
        match (mode, scheme) {
            ("native", _) => Ok(Mode::Native),
            ("datasketch", "legacy") => Ok(Mode::DatasketchLegacy),
            ("datasketch", "affine32") => Ok(Mode::DatasketchAffine32),
            ("datasketch", s) => Err(format!(
                "datasketch scheme must be 'legacy' or 'affine32', got {s:?}"
            )),
            (m, _) => Err(format!("mode must be 'native' or 'datasketch', got {m:?}")),
        }
    }
}

/// numpy's legacy `RandomState` generator (MT19937 with `init_genrand` seeding).
pub struct Mt19937 {
    mt: [u32; 624],
    idx: usize,
}

impl Mt19937 {
    pub fn new(seed: u32) -> Self {
        let mut mt = [0u32; 624];
        mt[0] = seed;
        for i in 1..624 {
            mt[i] = 1812433253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { mt, idx: 624 }
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        for i in 0..624 {
            let y = (self.mt[i] & UPPER) | (self.mt[(i + 1) % 624] & LOWER);
            let mut v = self.mt[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= 0x9908_b0df;
            }
            self.mt[i] = v;
        }
        self.idx = 0;
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.idx >= 624 {
            self.twist();
        }
        let mut y = self.mt[self.idx];
        self.idx += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// numpy's `next_uint64` for the legacy MT19937: high word drawn first.
    pub fn next_u64(&mut self) -> u64 {
        let hi = self.next_u32() as u64;
        let lo = self.next_u32() as u64;
        (hi << 32) | lo
    }

    fn mask(rng: u64) -> u64 {
        let mut m = rng;
        m |= m >> 1;
        m |= m >> 2;
        m |= m >> 4;
        m |= m >> 8;
        m |= m >> 16;
        m |= m >> 32;
        m
    }

    /// `RandomState.randint(low, high, dtype=np.uint64)` (high exclusive), numpy's
    /// masked rejection sampling.
    pub fn randint_u64(&mut self, low: u64, high: u64) -> u64 {
        let rng = high - low - 1;
        if rng == 0 {
            return low;
        }
        let mask = Self::mask(rng);
        if rng <= 0xffff_ffff {
            if rng == 0xffff_ffff {
                return low + self.next_u32() as u64;
            }
            loop {
                let v = (self.next_u32() as u64) & mask;
                if v <= rng {
                    return low + v;
                }
            }
        }
        if rng == u64::MAX {
            return low.wrapping_add(self.next_u64());
        }
        loop {
            let v = self.next_u64() & mask;
            if v <= rng {
                return low + v;
            }
        }
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[inline(always)]
pub fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[inline(always)]
pub fn sha1_hash32(bytes: &[u8]) -> u32 {
    let d = Sha1::digest(bytes);
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

/// Order-dependent mix of a shingle's word hashes, folded to 32 bits.
#[inline(always)]
fn mix_words(words: &[u64]) -> u32 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    for &w in words {
        h = (h ^ w).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 29;
    }
    h = (h ^ (h >> 32)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((h >> 32) ^ h) as u32
}

/// Hashes of the `ngram`-windows of a text's unit codes (words or characters): one per
/// window, or one for all the units when there are fewer than `ngram`, none for no unit.
fn mix_windows(codes: &[u64], ngram: usize, hashes: &mut Vec<u32>) {
    let n = ngram.max(1);
    if codes.is_empty() {
        return;
    }
    if codes.len() < n {
        hashes.push(mix_words(codes));
        return;
    }
    if n == 3 {
        // The default length, unrolled: a fixed-size window lets the compiler interleave
        // the multiplications of consecutive windows (same values as the general loop).
        hashes.extend((0..codes.len() - 2).map(|i| mix_words(&[codes[i], codes[i + 1], codes[i + 2]])));
        return;
    }
    hashes.extend(codes.windows(n).map(mix_words));
}

/// A character's code in native character shingles: the scalar value spread over 64 bits
/// (an odd multiplier is a bijection; `mix_words` does the avalanche).
#[inline(always)]
fn char_code(c: char) -> u64 {
    (c as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

#[inline(always)]
pub fn native_hash32(bytes: &[u8]) -> u32 {
    let h = xxhash_rust::xxh3::xxh3_64(bytes);
    ((h >> 32) ^ h) as u32
}

/// Everything that defines a signature.
#[derive(Clone, Debug, PartialEq)]
pub struct MinHashParams {
    pub num_perm: usize,
    pub seed: u64,
    pub ngram: usize,
    pub unit: Unit,
    pub norm: NormalizeOptions,
    pub mode: Mode,
    /// Whose words make word shingles (see [`crate::tokenize`]).
    pub lang: Lang,
}

impl MinHashParams {
    pub fn validate(&self) -> Result<(), String> {
        if self.num_perm == 0 || self.num_perm > 4096 {
            return Err(format!(
                "num_perm must be in [1, 4096], got {}",
                self.num_perm
            ));
        }
        if self.ngram == 0 {
            return Err("ngram must be >= 1".into());
        }
        if self.mode != Mode::Native && self.seed > u32::MAX as u64 {
            return Err(format!(
                "datasketch mode needs a seed in [0, 2**32 - 1] (numpy RandomState), got {}",
                self.seed
            ));
        }
        Ok(())
    }
}

/// The permutation parameters of one configuration.
#[derive(Clone, Debug)]
pub enum Permutations {
    /// u32 affine (native and affine32 datasketch).
    Affine32 { a: Vec<u32>, b: Vec<u32> },
    /// datasketch legacy, mod 2^61-1.
    Legacy { a: Vec<u64>, b: Vec<u64> },
}

impl Permutations {
    pub fn new(mode: Mode, num_perm: usize, seed: u64) -> Permutations {
        match mode {
            Mode::Native => {
                let mut st = seed ^ 0x6469_616c_696e_7369; // "dialinsi"
                let mut a = Vec::with_capacity(num_perm);
                let mut b = Vec::with_capacity(num_perm);
                for _ in 0..num_perm {
                    let r = splitmix64(&mut st);
                    a.push((r as u32) | 1);
                    b.push((r >> 32) as u32);
                }
                Permutations::Affine32 { a, b }
            }
            Mode::DatasketchLegacy => {
                let mut g = Mt19937::new(seed as u32);
                let mut a = Vec::with_capacity(num_perm);
                let mut b = Vec::with_capacity(num_perm);
                for _ in 0..num_perm {
                    a.push(g.randint_u64(1, MERSENNE_61));
                    b.push(g.randint_u64(0, MERSENNE_61));
                }
                Permutations::Legacy { a, b }
            }
            Mode::DatasketchAffine32 => {
                let mut g = Mt19937::new(seed as u32);
                let a = (0..num_perm)
                    .map(|_| {
                        (g.randint_u64(0, 1 << 31) as u32)
                            .wrapping_mul(2)
                            .wrapping_add(1)
                    })
                    .collect();
                let b = (0..num_perm)
                    .map(|_| g.randint_u64(0, 1 << 32) as u32)
                    .collect();
                Permutations::Affine32 { a, b }
            }
        }
    }

    /// (a, b) as u64 vectors (for Python and tests).
    pub fn as_u64(&self) -> (Vec<u64>, Vec<u64>) {
        match self {
            Permutations::Affine32 { a, b } => (
                a.iter().map(|&x| x as u64).collect(),
                b.iter().map(|&x| x as u64).collect(),
            ),
            Permutations::Legacy { a, b } => (a.clone(), b.clone()),
        }
    }
}

/// Permutations per register block: 32 lanes of (sig, a, b) fit in 12 AVX2 registers, so
/// the inner loop over hashes does no loads or stores.
const BLOCK: usize = 32;

#[inline(always)]
fn affine_update_generic(sig: &mut [u32], a: &[u32], b: &[u32], hashes: &[u32]) {
    let n = sig.len();
    let (a, b) = (&a[..n], &b[..n]);
    let mut start = 0;
    while start + BLOCK <= n {
        let mut s = [0u32; BLOCK];
        let mut ab = [0u32; BLOCK];
        let mut bb = [0u32; BLOCK];
        s.copy_from_slice(&sig[start..start + BLOCK]);
        ab.copy_from_slice(&a[start..start + BLOCK]);
        bb.copy_from_slice(&b[start..start + BLOCK]);
        for &x in hashes {
            for j in 0..BLOCK {
                s[j] = s[j].min(ab[j].wrapping_mul(x).wrapping_add(bb[j]));
            }
        }
        sig[start..start + BLOCK].copy_from_slice(&s);
        start += BLOCK;
    }
    for &x in hashes {
        for i in start..n {
            let v = a[i].wrapping_mul(x).wrapping_add(b[i]);
            sig[i] = sig[i].min(v);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn affine_update_avx2(sig: &mut [u32], a: &[u32], b: &[u32], hashes: &[u32]) {
    affine_update_generic(sig, a, b, hashes)
}

/// Fold token hashes into a u32 signature with affine permutations.
pub fn affine_update(sig: &mut [u32], a: &[u32], b: &[u32], hashes: &[u32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked at run time).
            unsafe { affine_update_avx2(sig, a, b, hashes) };
            return;
        }
    }
    affine_update_generic(sig, a, b, hashes)
}

#[inline(always)]
fn mod_mersenne61(v: u64) -> u64 {
    // v % (2^61 - 1) for any u64 v.
    let r = (v & MERSENNE_61) + (v >> 61);
    if r >= MERSENNE_61 {
        r - MERSENNE_61
    } else {
        r
    }
}

fn legacy_update(sig: &mut [u32], a: &[u64], b: &[u64], hashes: &[u32]) {
    let n = sig.len();
    for &x in hashes {
        let x = x as u64;
        for i in 0..n {
            let v = mod_mersenne61(a[i].wrapping_mul(x).wrapping_add(b[i])) as u32;
            sig[i] = sig[i].min(v);
        }
    }
}

/// Reusable per-thread buffers.
#[derive(Default)]
pub struct Scratch {
    norm: String,
    shingle: Vec<u8>,
    words: Vec<(usize, usize)>,
    word_hashes: Vec<u64>,
    hashes: Vec<u32>,
}

/// The MinHash engine for one configuration.
pub struct MinHasher {
    pub params: MinHashParams,
    pub perms: Permutations,
    /// Per-byte tables for the one-pass ASCII word path: separator flags and the byte each
    /// word byte becomes after normalisation (lowercase when on).
    ascii_sep: [bool; 256],
    ascii_map: [u8; 256],
}

impl MinHasher {
    pub fn new(params: MinHashParams) -> Result<MinHasher, String> {
        params.validate()?;
        let perms = Permutations::new(params.mode, params.num_perm, params.seed);
        let mut ascii_sep = [false; 256];
        let mut ascii_map = [0u8; 256];
        for b in 0..=255u8 {
            ascii_sep[b as usize] =
                is_ascii_space(b) || (params.norm.punctuation && !b.is_ascii_alphanumeric());
            ascii_map[b as usize] = if params.norm.lowercase {
                b.to_ascii_lowercase()
            } else {
                b
            };
        }
        Ok(MinHasher {
            params,
            perms,
            ascii_sep,
            ascii_map,
        })
    }

    pub fn num_perm(&self) -> usize {
        self.params.num_perm
    }

    /// Token hashes of one text (after normalisation and shingling), into `scratch.hashes`.
    fn token_hashes(&self, text: &str, scratch: &mut Scratch) {
        let p = &self.params;
        match (p.mode, p.unit) {
            (Mode::Native, Unit::Word) => self.native_word_hashes(text, scratch),
            (Mode::Native, Unit::Char) => self.native_char_hashes(text, scratch),
            _ => self.byte_shingle_hashes(text, scratch),
        }
        let hashes = &mut scratch.hashes;
        if p.mode == Mode::Native && hashes.len() > DEDUP_ABOVE {
            // Repeated shingles cannot change a minimum: drop them. Sorting costs about
            // half of one shingle's 128 permutations, so it only pays on long documents,
            // where repeats are common (and huge repetitive ones get much faster).
            hashes.sort_unstable();
            hashes.dedup();
        }
    }

    /// Hashes of shingles built as bytes: every datasketch mode (native mode hashes words and
    /// characters from their codes instead, see `native_word_hashes`/`native_char_hashes`).
    fn byte_shingle_hashes(&self, text: &str, scratch: &mut Scratch) {
        let p = &self.params;
        let Scratch {
            norm,
            shingle,
            words,
            hashes,
            ..
        } = scratch;
        hashes.clear();
        let t: &str = if p.norm.is_noop() {
            text
        } else {
            normalize_into(text, &p.norm, norm);
            norm.as_str()
        };
        match p.mode {
            Mode::Native => {
                for_each_shingle_with(t, p.unit, p.ngram, p.lang, shingle, words, |s| {
                    hashes.push(native_hash32(s))
                });
            }
            Mode::DatasketchLegacy => {
                for_each_shingle_with(t, p.unit, p.ngram, p.lang, shingle, words, |s| {
                    hashes.push(sha1_hash32(s))
                });
            }
            Mode::DatasketchAffine32 => {
                for_each_shingle_with(t, p.unit, p.ngram, p.lang, shingle, words, |s| {
                    hashes.push(fmix32(sha1_hash32(s)))
                });
            }
        }
    }

    /// Native word shingles: every word is hashed once (xxh3 of its normalised bytes) and a
    /// shingle's hash is an order-dependent mix of its words' hashes, so the joined shingle
    /// bytes are never built or rehashed. ASCII text is normalised, split and hashed in one
    /// pass; other text goes through [`normalize_into`] first. Both give the same word bytes,
    /// hence the same hashes.
    fn native_word_hashes(&self, text: &str, scratch: &mut Scratch) {
        let Scratch {
            norm,
            shingle: word,
            word_hashes,
            hashes,
            ..
        } = scratch;
        let p = &self.params;
        word_hashes.clear();
        hashes.clear();
        if text.is_ascii() {
            let (sep, map) = (&self.ascii_sep, &self.ascii_map);
            word.clear();
            for &b in text.as_bytes() {
                if sep[b as usize] {
                    if !word.is_empty() {
                        word_hashes.push(xxhash_rust::xxh3::xxh3_64(word));
                        word.clear();
                    }
                } else {
                    word.push(map[b as usize]);
                }
            }
            if !word.is_empty() {
                word_hashes.push(xxhash_rust::xxh3::xxh3_64(word));
            }
        } else {
            let t: &str = if p.norm.is_noop() {
                text
            } else {
                normalize_into(text, &p.norm, norm);
                norm.as_str()
            };
            for_each_token(t, p.lang, Style::Shingle, |w| {
                word_hashes.push(xxhash_rust::xxh3::xxh3_64(w.as_bytes()))
            });
        }
        mix_windows(word_hashes, p.ngram, hashes);
    }

    /// Native character shingles: every character of the normalised text becomes a 64-bit
    /// code once ([`char_code`]) and a shingle's hash is the order-dependent mix of its
    /// characters' codes, as for words: the shingle's bytes are never sliced or hashed
    /// (on Chinese text, hashing each 3-character slice with xxh3 was a sixth of the time).
    /// The codes come straight out of normalisation ([`normalized_char_codes`]).
    fn native_char_hashes(&self, text: &str, scratch: &mut Scratch) {
        let Scratch {
            norm,
            word_hashes: codes,
            hashes,
            ..
        } = scratch;
        let p = &self.params;
        hashes.clear();
        normalized_char_codes(text, &p.norm, norm, char_code, codes);
        mix_windows(codes, p.ngram, hashes);
    }

    /// Signature of one text into `out` (length `num_perm`). Returns the number of
    /// shingles (0 means the empty set: `out` is all [`EMPTY`]).
    pub fn signature_into(&self, text: &str, out: &mut [u32], scratch: &mut Scratch) -> usize {
        out.fill(EMPTY);
        self.token_hashes(text, scratch);
        let hashes = &scratch.hashes;
        match &self.perms {
            Permutations::Affine32 { a, b } => affine_update(out, a, b, hashes),
            Permutations::Legacy { a, b } => legacy_update(out, a, b, hashes),
        }
        hashes.len()
    }

    pub fn signature(&self, text: &str) -> Vec<u32> {
        let mut out = vec![EMPTY; self.num_perm()];
        self.signature_into(text, &mut out, &mut Scratch::default());
        out
    }

    /// Signatures of a batch of texts (nulls give the empty signature), in parallel.
    /// `out` must hold `texts.len() * num_perm` values. Returns per-row "has at least
    /// one shingle" flags.
    pub fn signatures_into(&self, texts: &[Option<&str>], out: &mut [u32]) -> Vec<bool> {
        let p = self.num_perm();
        assert_eq!(out.len(), texts.len() * p);
        let mut nonempty = vec![false; texts.len()];
        out.par_chunks_mut(p)
            .zip(nonempty.par_iter_mut())
            .zip(texts.par_iter())
            .with_min_len(16)
            .for_each_init(Scratch::default, |scratch, ((sig, ne), t)| match t {
                Some(t) => *ne = self.signature_into(t, sig, scratch) > 0,
                None => sig.fill(EMPTY),
            });
        nonempty
    }
}

/// Estimated Jaccard: share of equal slots.
#[inline]
pub fn jaccard_estimate(a: &[u32], b: &[u32]) -> f64 {
    debug_assert_eq!(a.len(), b.len());
    if a.is_empty() {
        return 0.0;
    }
    let eq = a.iter().zip(b).filter(|(x, y)| x == y).count();
    eq as f64 / a.len() as f64
}

/// Exact Jaccard of two shingle sets (tests and benchmarks).
pub fn exact_jaccard<T: std::hash::Hash + Eq>(a: &[T], b: &[T]) -> f64 {
    use std::collections::HashSet;
    let sa: HashSet<&T> = a.iter().collect();
    let sb: HashSet<&T> = b.iter().collect();
    let union = sa.union(&sb).count();
    if union == 0 {
        return 0.0;
    }
    sa.intersection(&sb).count() as f64 / union as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(mode: Mode) -> MinHashParams {
        MinHashParams {
            num_perm: 128,
            seed: 1,
            ngram: 3,
            unit: Unit::Word,
            norm: NormalizeOptions::ALL,
            mode,
            lang: Lang::En,
        }
    }

    #[test]
    fn mt19937_matches_numpy() {
        let mut g = Mt19937::new(5489);
        // Reference value of the canonical MT19937 (seed 5489) first output.
        assert_eq!(g.next_u32(), 3499211612);
        // np.random.RandomState(1): a, b = randint(1, 2**61-1), randint(0, 2**61-1)
        let mut g = Mt19937::new(1);
        let a = g.randint_u64(1, MERSENNE_61);
        let b = g.randint_u64(0, MERSENNE_61);
        // np.random.RandomState(1).randint(1, 2**61-1, dtype=np.uint64), then (0, 2**61-1)
        assert_eq!((a, b), (775169054918279404, 1758426461858698312));
    }

    #[test]
    fn empty_and_single_token() {
        for mode in [
            Mode::Native,
            Mode::DatasketchLegacy,
            Mode::DatasketchAffine32,
        ] {
            let h = MinHasher::new(params(mode)).unwrap();
            assert!(h.signature("").iter().all(|&v| v == EMPTY));
            assert!(h.signature("  ,, ").iter().all(|&v| v == EMPTY));
            let one = h.signature("hello");
            assert!(one.iter().any(|&v| v != EMPTY));
            assert_eq!(one, h.signature("HELLO!"));
            assert_eq!(jaccard_estimate(&one, &h.signature("Hello")), 1.0);
        }
    }

    #[test]
    fn mersenne_reduction() {
        for v in [
            0u64,
            1,
            MERSENNE_61 - 1,
            MERSENNE_61,
            MERSENNE_61 + 1,
            u64::MAX,
            1 << 63,
        ] {
            assert_eq!(mod_mersenne61(v), v % MERSENNE_61);
        }
    }

    #[test]
    fn invalid_params() {
        let mut p = params(Mode::Native);
        p.num_perm = 0;
        assert!(MinHasher::new(p).is_err());
        let mut p = params(Mode::DatasketchLegacy);
        p.seed = 1 << 40;
        assert!(MinHasher::new(p).is_err());
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::text::shingles;
    use proptest::prelude::*;

    fn hasher(mode: Mode, num_perm: usize) -> MinHasher {
        MinHasher::new(MinHashParams {
            num_perm,
            seed: 7,
            ngram: 2,
            unit: Unit::Word,
            norm: NormalizeOptions::ALL,
            mode,
            lang: Lang::En,
        })
        .unwrap()
    }

    fn doc() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec!["a", "b", "c", "d", "e", "f", "g", "h"]),
            0..40,
        )
        .prop_map(|w| w.join(" "))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn estimate_is_bounded_and_tracks_exact(x in doc(), y in doc()) {
            let h = hasher(Mode::Native, 256);
            let (sx, sy) = (h.signature(&x), h.signature(&y));
            let est = jaccard_estimate(&sx, &sy);
            prop_assert!((0.0..=1.0).contains(&est));
            prop_assert_eq!(jaccard_estimate(&sx, &sx), 1.0);
            let (shx, shy) = (shingles(&normalize_ascii(&x), Unit::Word, 2), shingles(&normalize_ascii(&y), Unit::Word, 2));
            if !shx.is_empty() && !shy.is_empty() {
                let exact = exact_jaccard(&shx, &shy);
                // 5 standard errors of a 256-permutation estimate (<= 0.157)
                prop_assert!((est - exact).abs() <= 0.16, "est {} exact {}", est, exact);
                if exact == 0.0 { prop_assert!(est < 0.1); }
            }
        }

        #[test]
        fn any_text_signs_without_panic(s in "\\PC{0,64}", mode in prop::sample::select(vec![Mode::Native, Mode::DatasketchLegacy, Mode::DatasketchAffine32])) {
            let h = hasher(mode, 16);
            let sig = h.signature(&s);
            // the hasher NFKC-normalises first, which can make a word of a symbol
            // (U+1F240, a bracketed ideograph, becomes the ideograph itself in brackets)
            let has_word = unicode_normalization::UnicodeNormalization::nfkc(s.as_str()).any(char::is_alphanumeric);
            prop_assert_eq!(sig.iter().any(|&v| v != EMPTY), has_word);
        }

        #[test]
        fn char_shingle_estimate_tracks_exact(
            x in "[你好我想找一家餐馆酒店的吗]{0,40}",
            y in "[你好我想找一家餐馆酒店的吗]{0,40}",
        ) {
            let h = MinHasher::new(MinHashParams {
                num_perm: 256, seed: 7, ngram: 2, unit: Unit::Char,
                norm: NormalizeOptions::ALL, mode: Mode::Native, lang: Lang::Zh,
            }).unwrap();
            let est = jaccard_estimate(&h.signature(&x), &h.signature(&y));
            let (shx, shy) = (shingles(&x, Unit::Char, 2), shingles(&y, Unit::Char, 2));
            if !shx.is_empty() && !shy.is_empty() {
                let exact = exact_jaccard(&shx, &shy);
                prop_assert!((est - exact).abs() <= 0.16, "est {} exact {}", est, exact);
            }
        }

        #[test]
        fn one_token_docs_match_themselves(w in "[a-z]{1,12}") {
            let h = hasher(Mode::DatasketchLegacy, 32);
            let a = h.signature(&w);
            prop_assert!(a.iter().all(|&v| v != EMPTY));
            prop_assert_eq!(jaccard_estimate(&a, &h.signature(&w.to_uppercase())), 1.0);
        }
    }

    fn normalize_ascii(s: &str) -> String {
        crate::text::normalize(s, &NormalizeOptions::ALL)
    }
}
