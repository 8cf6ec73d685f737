//! Text-complexity metrics. Every formula is documented in `docs/metrics.md`; the
//! benchmark `benchmarks/bench_metrics.py` holds a plain Python implementation that must
//! give identical results.
use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};
use xxhash_rust::xxh3::xxh3_64;

pub const MTLD_THRESHOLD: f64 = 0.72;
pub const CHAR_REP_N: usize = 10;
pub const WORD_REP_N: usize = 10;

/// Constraint cues (lowercased token sequences), matched greedily longest-first.
pub const CONSTRAINT_CUES: &[&str] = &[
    "must",
    "must not",
    "should",
    "should not",
    "shall",
    "need to",
    "needs to",
    "required",
    "require",
    "requires",
    "at most",
    "at least",
    "exactly",
    "only",
    "do not",
    "don't",
    "don’t",
    "never",
    "always",
    "without",
    "no more than",
    "no less than",
    "no fewer than",
    "fewer than",
    "less than",
    "more than",
    "up to",
    "include",
    "includes",
    "including",
    "exclude",
    "excludes",
    "excluding",
    "within",
    "limit",
    "limited",
    "maximum",
    "minimum",
    "ensure",
    "avoid",
    "strictly",
];

/// Output-format cues (single lowercased tokens).
pub const FORMAT_CUES: &[&str] = &[
    "json",
    "yaml",
    "xml",
    "csv",
    "tsv",
    "html",
    "markdown",
    "table",
    "tables",
    "bullet",
    "bullets",
    "bulleted",
    "list",
    "lists",
    "numbered",
    "format",
    "formatted",
    "formatting",
    "template",
    "schema",
    "field",
    "fields",
    "column",
    "columns",
    "heading",
    "headings",
    "header",
    "headers",
    "title",
    "paragraph",
    "paragraphs",
    "sentences",
    "words",
    "lines",
    "characters",
    "points",
];

/// Metrics of one text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TextMetrics {
    pub words: u64,
    pub chars: u64,
    pub approx_tokens: u64,
    pub sentences: u64,
    pub mean_sentence_words: f64,
    pub ttr: f64,
    pub mtld: f64,
    pub word_entropy: f64,
    pub distinct_1: f64,
    pub distinct_2: f64,
    pub char_rep_ratio: f64,
    pub word_rep_ratio: f64,
    pub constraint_cues: u64,
    pub enumerated_steps: u64,
    pub question_marks: u64,
    pub format_requirements: u64,
}

/// Python's `str.split()` whitespace (Unicode White_Space plus U+001C..U+001F).
#[inline]
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn is_sentence_end(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '\n' | '。' | '！' | '？')
}

/// Lexical tokens: lowercase, split on whitespace, strip ASCII punctuation at both ends,
/// drop empty tokens.
pub fn lexical_tokens(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    lexical_slices(&lower)
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// Lexical tokens of an already-lowercased text, as slices of it.
fn lexical_slices(lower: &str) -> Vec<&str> {
    lower
        .split(is_py_space)
        .map(|w| w.trim_matches(|c: char| c.is_ascii_punctuation()))
        .filter(|w| !w.is_empty())
        .collect()
}

/// One MTLD pass; `seen[id] == epoch` marks a type seen in the current segment.
fn mtld_pass<I: Iterator<Item = u32>>(ids: I, n: usize, seen: &mut [u32], epoch: &mut u32) -> f64 {
    let mut factors = 0.0f64;
    let mut count = 0usize;
    let mut types = 0usize;
    *epoch += 1;
    for id in ids {
        count += 1;
        if seen[id as usize] != *epoch {
            seen[id as usize] = *epoch;
            types += 1;
        }
        if types as f64 / count as f64 <= MTLD_THRESHOLD {
            factors += 1.0;
            *epoch += 1;
            types = 0;
            count = 0;
        }
    }
    if count > 0 {
        factors += (1.0 - types as f64 / count as f64) / (1.0 - MTLD_THRESHOLD);
    }
    if factors > 0.0 {
        n as f64 / factors
    } else {
        n as f64
    }
}

/// Data-Juicer's character repetition ratio over code-point n-grams.
pub fn char_rep_ratio(text: &str, n: usize) -> f64 {
    let mut hashes: Vec<u64> = if text.is_ascii() {
        let b = text.as_bytes();
        if b.len() < n {
            return 0.0;
        }
        b.windows(n).map(xxh3_64).collect()
    } else {
        let mut starts: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        let nchars = starts.len();
        if nchars < n {
            return 0.0;
        }
        starts.push(text.len());
        let b = text.as_bytes();
        (0..=nchars - n)
            .map(|i| xxh3_64(&b[starts[i]..starts[i + n]]))
            .collect()
    };
    rep_ratio_top_sqrt(&mut hashes)
}

/// From n-gram keys: sort descending frequencies, take the top
/// `min(floor(sqrt(distinct)), distinct - singletons)` and divide their sum by the total.
fn rep_ratio_top_sqrt(keys: &mut [u64]) -> f64 {
    if keys.is_empty() {
        return 0.0;
    }
    keys.sort_unstable();
    let mut freqs: Vec<u64> = Vec::new();
    let mut i = 0;
    while i < keys.len() {
        let mut j = i + 1;
        while j < keys.len() && keys[j] == keys[i] {
            j += 1;
        }
        freqs.push((j - i) as u64);
        i = j;
    }
    let distinct = freqs.len();
    let singletons = freqs.iter().filter(|&&f| f == 1).count();
    let k = ((distinct as f64).sqrt() as usize).min(distinct - singletons);
    freqs.sort_unstable_by(|a, b| b.cmp(a));
    let total: u64 = freqs.iter().sum();
    let top: u64 = freqs[..k].iter().sum();
    if total == 0 {
        0.0
    } else {
        top as f64 / total as f64
    }
}

/// Data-Juicer's word repetition ratio: share of word n-gram occurrences whose n-gram
/// occurs more than once.
fn word_rep_ratio_ids(ids: &[u32], n: usize) -> f64 {
    if ids.len() < n || n == 0 {
        return 0.0;
    }
    let mut counts: FxHashMap<&[u32], u64> = FxHashMap::default();
    counts.reserve(ids.len() - n + 1);
    for w in ids.windows(n) {
        *counts.entry(w).or_insert(0) += 1;
    }
    let total: u64 = counts.values().sum();
    let rep: u64 = counts.values().filter(|&&c| c > 1).sum();
    if total == 0 {
        0.0
    } else {
        rep as f64 / total as f64
    }
}

fn is_enumerated_line(line: &str) -> bool {
    let l = line.trim_start_matches(is_py_space);
    let b = l.as_bytes();
    // "1." / "12)" followed by whitespace or end of line
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if (1..=3).contains(&digits) && b.len() > digits && (b[digits] == b'.' || b[digits] == b')') {
        let rest = &l[digits + 1..];
        return rest.chars().next().is_none_or(is_py_space);
    }
    // "- ", "* ", "+ ", "• "
    let mut cs = l.chars();
    if let Some(c0) = cs.next() {
        if matches!(c0, '-' | '*' | '+' | '•') {
            return cs.next().is_some_and(is_py_space);
        }
    }
    // "Step 3", "step3" (ASCII case-insensitive)
    if b.len() >= 5 && b[..4].eq_ignore_ascii_case(b"step") {
        let rest = l[4..].trim_start_matches(is_py_space);
        return rest.as_bytes().first().is_some_and(|c| c.is_ascii_digit());
    }
    false
}

struct CueMatcher {
    /// phrase token sequences, longest first
    phrases: Vec<Vec<&'static str>>,
    format: FxHashSet<&'static str>,
}

impl CueMatcher {
    fn new() -> Self {
        let mut phrases: Vec<Vec<&'static str>> = CONSTRAINT_CUES
            .iter()
            .map(|p| p.split(' ').collect())
            .collect();
        phrases.sort_by_key(|p| std::cmp::Reverse(p.len()));
        CueMatcher {
            phrases,
            format: FORMAT_CUES.iter().copied().collect(),
        }
    }

    fn constraint_count(&self, toks: &[&str]) -> u64 {
        let mut i = 0;
        let mut count = 0;
        while i < toks.len() {
            let mut step = 1;
            for p in &self.phrases {
                if i + p.len() <= toks.len() && p.iter().zip(&toks[i..]).all(|(a, b)| *a == *b) {
                    count += 1;
                    step = p.len();
                    break;
                }
            }
            i += step;
        }
        count
    }

    fn format_count(&self, toks: &[&str]) -> u64 {
        toks.iter().filter(|t| self.format.contains(*t)).count() as u64
    }
}

fn cue_matcher() -> &'static CueMatcher {
    static M: std::sync::OnceLock<CueMatcher> = std::sync::OnceLock::new();
    M.get_or_init(CueMatcher::new)
}

/// All metrics of one text.
pub fn text_metrics(text: &str, instruction: bool) -> TextMetrics {
    let mut m = TextMetrics::default();
    let mut ascii_chars = 0u64;
    let mut chars = 0u64;
    let mut qmarks = 0u64;
    for c in text.chars() {
        chars += 1;
        if c.is_ascii() {
            ascii_chars += 1;
        }
        if c == '?' || c == '？' {
            qmarks += 1;
        }
    }
    m.chars = chars;
    m.approx_tokens = (ascii_chars + 2 * (chars - ascii_chars)).div_ceil(4);
    m.words = text.split(is_py_space).filter(|w| !w.is_empty()).count() as u64;
    m.sentences = text
        .split(is_sentence_end)
        .filter(|s| s.chars().any(char::is_alphanumeric))
        .count() as u64;
    m.mean_sentence_words = if m.sentences > 0 {
        m.words as f64 / m.sentences as f64
    } else {
        0.0
    };

    let lower = text.to_lowercase();
    let toks = lexical_slices(&lower);
    let n = toks.len();
    // Token ids in first-occurrence order.
    let mut id_of: FxHashMap<&str, u32> = FxHashMap::default();
    id_of.reserve(n / 2 + 1);
    let mut counts: Vec<u64> = Vec::new();
    let ids: Vec<u32> = toks
        .iter()
        .map(|t| {
            let next = id_of.len() as u32;
            let id = *id_of.entry(t).or_insert(next);
            if id == next {
                counts.push(0);
            }
            counts[id as usize] += 1;
            id
        })
        .collect();
    let types = counts.len();
    if n > 0 {
        m.ttr = types as f64 / n as f64;
        m.distinct_1 = m.ttr;
        let mut seen = vec![0u32; types];
        let mut epoch = 0u32;
        let fwd = mtld_pass(ids.iter().copied(), n, &mut seen, &mut epoch);
        let bwd = mtld_pass(ids.iter().rev().copied(), n, &mut seen, &mut epoch);
        m.mtld = (fwd + bwd) / 2.0;
        let mut h = 0.0f64;
        for &c in &counts {
            let p = c as f64 / n as f64;
            h -= p * p.log2();
        }
        m.word_entropy = h;
    }
    if n > 1 {
        let mut bigrams: Vec<u64> = ids
            .windows(2)
            .map(|w| ((w[0] as u64) << 32) | w[1] as u64)
            .collect();
        let total = bigrams.len();
        bigrams.sort_unstable();
        bigrams.dedup();
        m.distinct_2 = bigrams.len() as f64 / total as f64;
    }
    m.char_rep_ratio = char_rep_ratio(text, CHAR_REP_N);
    m.word_rep_ratio = word_rep_ratio_ids(&ids, WORD_REP_N);
    if instruction {
        let cm = cue_matcher();
        m.constraint_cues = cm.constraint_count(&toks);
        m.format_requirements = cm.format_count(&toks);
        m.enumerated_steps = text.split('\n').filter(|l| is_enumerated_line(l)).count() as u64;
        m.question_marks = qmarks;
    }
    m
}

/// Metrics of a batch (nulls stay None), in parallel.
pub fn batch_metrics(texts: &[Option<&str>], instruction: bool) -> Vec<Option<TextMetrics>> {
    texts
        .par_iter()
        .with_min_len(8)
        .map(|t| t.map(|t| text_metrics(t, instruction)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_counts() {
        let m = text_metrics("Hello world. How are you? Fine!", true);
        assert_eq!(m.words, 6);
        assert_eq!(m.chars, 31);
        assert_eq!(m.sentences, 3);
        assert_eq!(m.question_marks, 1);
        assert!((m.mean_sentence_words - 2.0).abs() < 1e-12);
        assert_eq!(m.ttr, 1.0);
        assert_eq!(m.approx_tokens, 8);
    }

    #[test]
    fn empty_text() {
        let m = text_metrics("", true);
        assert_eq!(m, TextMetrics::default());
    }

    #[test]
    fn instruction_cues() {
        let t = "You must answer in at most 50 words and do not use JSON.\n1. Read\n- list\nStep 2: go\n3.5 is not a step";
        let m = text_metrics(t, true);
        assert_eq!(m.constraint_cues, 3); // must, at most, do not
        assert_eq!(m.enumerated_steps, 3);
        assert_eq!(m.format_requirements, 3); // words, json, list
    }

    #[test]
    fn repetition_ratios() {
        let rep = "abcdefghij".repeat(20);
        assert!(char_rep_ratio(&rep, 10) > 0.0);
        assert_eq!(char_rep_ratio("abcdefghijklmnop", 10), 0.0);
        let m = text_metrics(&"the cat sat on the mat ".repeat(10), false);
        assert_eq!(m.word_rep_ratio, 1.0);
    }

    #[test]
    fn non_latin() {
        let m = text_metrics("Привет, мир! 你好，世界。", false);
        assert_eq!(m.words, 3);
        assert_eq!(m.sentences, 2);
        assert_eq!(m.chars, 19);
    }
}
