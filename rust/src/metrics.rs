//! Text-complexity metrics. Every formula is documented in `docs/metrics.md`; the
//! benchmark `benchmarks/bench_metrics.py` holds a plain Python implementation that must
//! give identical results.
use crate::tokenize::{lexical_words, needs_segmentation, Lang};
use aho_corasick::{AhoCorasick, MatchKind};
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use xxhash_rust::xxh3::xxh3_64;

pub const MTLD_THRESHOLD: f64 = 0.72;
pub const CHAR_REP_N: usize = 10;
pub const WORD_REP_N: usize = 10;

/// Built-in cue lists, one file per language (`python/dialinsight_engine/data/cues/`).
pub const CUE_FILES: &[(&str, &str)] = &[
    (
        "en",
        include_str!("../../python/dialinsight_engine/data/cues/en.txt"),
    ),
    (
        "zh",
        include_str!("../../python/dialinsight_engine/data/cues/zh.txt"),
    ),
];

/// Instruction cue phrases by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cues {
    pub constraint: Vec<String>,
    pub format: Vec<String>,
    pub step: Vec<String>,
}

impl Cues {
    /// Parse a cue file: `[constraint]`, `[format]`, `[step]` sections, one phrase a line,
    /// `#` comments.
    pub fn parse(text: &str) -> Result<Cues, String> {
        let mut cues = Cues::default();
        let mut section: Option<&mut Vec<String>> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = Some(
                    cues.kind_mut(name)
                        .ok_or_else(|| format!("line {}: unknown cue section [{name}]", i + 1))?,
                );
                continue;
            }
            match section.as_mut() {
                Some(v) => v.push(line.to_lowercase()),
                None => return Err(format!("line {}: phrase before any [section]", i + 1)),
            }
        }
        Ok(cues)
    }

    pub fn kind_mut(&mut self, kind: &str) -> Option<&mut Vec<String>> {
        match kind {
            "constraint" => Some(&mut self.constraint),
            "format" => Some(&mut self.format),
            "step" => Some(&mut self.step),
            _ => None,
        }
    }

    /// The built-in cues of a language (English ones always, plus the language's own file).
    pub fn builtin(lang: Lang) -> Cues {
        let mut out = Cues::default();
        for (code, text) in CUE_FILES {
            if *code == "en" || *code == lang.code() {
                out.extend(&Cues::parse(text).expect("built-in cue files parse"));
            }
        }
        out
    }

    pub fn extend(&mut self, other: &Cues) {
        for (mine, theirs) in [
            (&mut self.constraint, &other.constraint),
            (&mut self.format, &other.format),
            (&mut self.step, &other.step),
        ] {
            for p in theirs {
                let p = p.trim().to_lowercase();
                if !p.is_empty() && !mine.contains(&p) {
                    mine.push(p);
                }
            }
        }
    }
}

/// Matches one kind of cue: spaced phrases as lowercased word sequences (longest first),
/// phrases in unspaced scripts as substrings (leftmost-longest, non-overlapping).
struct PhraseMatcher {
    /// word sequences, longest first
    phrases: Vec<Vec<String>>,
    substrings: Option<AhoCorasick>,
}

impl PhraseMatcher {
    fn new(list: &[String]) -> Self {
        let (unspaced, spaced): (Vec<&String>, Vec<&String>) =
            list.iter().partition(|p| p.chars().any(needs_segmentation));
        let mut phrases: Vec<Vec<String>> = spaced
            .iter()
            .map(|p| p.split_whitespace().map(str::to_owned).collect())
            .collect();
        phrases.sort_by_key(|p: &Vec<String>| std::cmp::Reverse(p.len()));
        let substrings = (!unspaced.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&unspaced)
                .expect("cue phrases build an automaton")
        });
        PhraseMatcher {
            phrases,
            substrings,
        }
    }

    fn count(&self, lower: &str, toks: &[&str]) -> u64 {
        let mut i = 0;
        let mut count = 0;
        if !self.phrases.is_empty() {
            while i < toks.len() {
                let mut step = 1;
                for p in &self.phrases {
                    if i + p.len() <= toks.len() && p.iter().zip(&toks[i..]).all(|(a, b)| a == b) {
                        count += 1;
                        step = p.len();
                        break;
                    }
                }
                i += step;
            }
        }
        if let Some(ac) = &self.substrings {
            count += ac.find_iter(lower).count() as u64;
        }
        count
    }
}

/// The instruction-cue matchers of one language (built-in lists plus the spec's).
pub struct CueMatcher {
    constraint: PhraseMatcher,
    format: PhraseMatcher,
    step: PhraseMatcher,
}

impl CueMatcher {
    pub fn new(cues: &Cues) -> Self {
        CueMatcher {
            constraint: PhraseMatcher::new(&cues.constraint),
            format: PhraseMatcher::new(&cues.format),
            step: PhraseMatcher::new(&cues.step),
        }
    }
}

/// Everything a text's metrics depend on besides the text.
pub struct MetricsConfig {
    pub lang: Lang,
    /// `Some`: instruction measures (cues, steps, question marks) too.
    pub cues: Option<CueMatcher>,
}

impl MetricsConfig {
    pub fn new(lang: Lang, instruction: bool, extra: Option<&Cues>) -> Self {
        let cues = instruction.then(|| {
            let mut c = Cues::builtin(lang);
            if let Some(extra) = extra {
                c.extend(extra);
            }
            CueMatcher::new(&c)
        });
        MetricsConfig { lang, cues }
    }
}

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

pub use crate::tokenize::is_py_space;

fn is_sentence_end(c: char) -> bool {
    // ASCII ends, then the CJK full stop, full-width ! ? ; and the half-width full stop
    matches!(c, '.' | '!' | '?' | '\n' | '。' | '！' | '？' | '；' | '｡')
}

/// Lexical tokens (lowercased) and the `words` count of a text: see
/// [`crate::tokenize::for_each_lexical_chunk`].
pub fn lexical_tokens(text: &str, lang: Lang) -> Vec<String> {
    let lower = text.to_lowercase();
    lexical_slices(&lower, lang)
        .0
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// Lexical tokens of an already-lowercased text, as slices of it, and the `words` count.
fn lexical_slices(lower: &str, lang: Lang) -> (Vec<&str>, u64) {
    let mut toks = Vec::new();
    let words = lexical_words(lower, lang, &mut toks);
    (toks, words)
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
    is_cjk_enumerated(l)
}

/// Chinese and Japanese numbering: "1、", "1．", "（1）", "一、", "第三步" (and full-width
/// digits). ASCII forms such as "(1)" are left out so English counts stay as they were.
fn is_cjk_enumerated(l: &str) -> bool {
    let is_num = |c: char| {
        c.is_ascii_digit() || ('０'..='９').contains(&c) || "一二三四五六七八九十".contains(c)
    };
    // (opening, closing) around 1..=3 numerals; no opening: the numerals start the line
    let (open, close): (Option<char>, &[char]) = match l.chars().next() {
        Some('（') => (Some('（'), &['）']),
        Some('第') => (Some('第'), &['步']),
        _ => (None, &['、', '．']),
    };
    let rest = open.map_or(l, |o| &l[o.len_utf8()..]);
    let n = rest.chars().take_while(|&c| is_num(c)).count();
    (1..=3).contains(&n) && rest.chars().nth(n).is_some_and(|c| close.contains(&c))
}

/// All metrics of one text.
pub fn text_metrics(text: &str, cfg: &MetricsConfig) -> TextMetrics {
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
    m.sentences = text
        .split(is_sentence_end)
        .filter(|s| s.chars().any(char::is_alphanumeric))
        .count() as u64;

    let lower = text.to_lowercase();
    let (toks, words) = lexical_slices(&lower, cfg.lang);
    m.words = words;
    m.mean_sentence_words = if m.sentences > 0 {
        m.words as f64 / m.sentences as f64
    } else {
        0.0
    };
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
    if let Some(cm) = &cfg.cues {
        m.constraint_cues = cm.constraint.count(&lower, &toks);
        m.format_requirements = cm.format.count(&lower, &toks);
        m.enumerated_steps = text.split('\n').filter(|l| is_enumerated_line(l)).count() as u64
            + cm.step.count(&lower, &toks);
        m.question_marks = qmarks;
    }
    m
}

/// Metrics of a batch (nulls stay None), in parallel.
pub fn batch_metrics(texts: &[Option<&str>], cfg: &MetricsConfig) -> Vec<Option<TextMetrics>> {
    texts
        .par_iter()
        .with_min_len(8)
        .map(|t| t.map(|t| text_metrics(t, cfg)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(t: &str, instruction: bool) -> TextMetrics {
        text_metrics(t, &MetricsConfig::new(Lang::En, instruction, None))
    }

    fn zh(t: &str) -> TextMetrics {
        text_metrics(t, &MetricsConfig::new(Lang::Zh, true, None))
    }

    #[test]
    fn basic_counts() {
        let m = metrics("Hello world. How are you? Fine!", true);
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
        let m = metrics("", true);
        assert_eq!(m, TextMetrics::default());
    }

    #[test]
    fn instruction_cues() {
        let t = "You must answer in at most 50 words and do not use JSON.\n1. Read\n- list\nStep 2: go\n3.5 is not a step";
        let m = metrics(t, true);
        assert_eq!(m.constraint_cues, 3); // must, at most, do not
        assert_eq!(m.enumerated_steps, 3);
        assert_eq!(m.format_requirements, 3); // words, json, list
    }

    #[test]
    fn repetition_ratios() {
        let rep = "abcdefghij".repeat(20);
        assert!(char_rep_ratio(&rep, 10) > 0.0);
        assert_eq!(char_rep_ratio("abcdefghijklmnop", 10), 0.0);
        let m = metrics(&"the cat sat on the mat ".repeat(10), false);
        assert_eq!(m.word_rep_ratio, 1.0);
    }

    #[test]
    fn non_latin() {
        let t = "Привет, мир! 你好，世界。";
        let m = metrics(t, false);
        // two Cyrillic words; the Han chunk cut per ideograph without a dictionary
        assert_eq!(m.words, 6);
        assert_eq!(m.sentences, 2);
        assert_eq!(m.chars, 19);
        assert_eq!(zh(t).words, 4); // 你好, 世界
    }

    #[test]
    fn chinese_words_and_cues() {
        let t = "请用JSON格式输出，必须包含价格，不超过50个字。\n1、先读对话\n（2）然后回答\n第三步：检查";
        let m = zh(t);
        assert!(m.words > 15, "{m:?}");
        assert_eq!(m.sentences, 4);
        // 必须, 包含, 不超过
        assert_eq!(m.constraint_cues, 3, "{m:?}");
        // json (English list, as a word), 请用, 格式, 个字
        assert_eq!(m.format_requirements, 4, "{m:?}");
        // three numbered lines, 然后, 第三步 (also the line)
        assert_eq!(m.enumerated_steps, 5, "{m:?}");
        // English text reads the same in either language
        let en = "You must answer in at most 50 words and do not use JSON.";
        assert_eq!(metrics(en, true), zh(en));
    }

    #[test]
    fn cue_files_parse_and_extend() {
        let mut c = Cues::builtin(Lang::Zh);
        assert!(c.constraint.contains(&"must".to_string()));
        assert!(c.constraint.contains(&"必须".to_string()));
        assert!(Cues::parse("must\n").is_err());
        assert!(Cues::parse("[nope]\nx").is_err());
        let before = c.format.len();
        c.extend(&Cues {
            format: vec!["用表格".into(), "json".into()],
            ..Default::default()
        });
        assert_eq!(c.format.len(), before + 1);
    }
}
