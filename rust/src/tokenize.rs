//! The one script-aware tokenizer of the core: text metrics, word shingles for MinHash and
//! the n-gram richness metric all take their words from [`for_each_token`].
//!
//! A text is first split on whitespace. A whitespace-separated chunk written only in scripts
//! that put spaces between words (Latin, Cyrillic, Greek, Arabic, ...) is one word, exactly as
//! before this module existed (so English results do not move). A chunk holding a character of
//! a script written without spaces (Han, Kana, Thai, Lao, Khmer, Myanmar) or of Hangul is cut
//! into Unicode words (UAX #29, `unicode-segmentation`), keeping only segments with a letter or
//! digit; then, per script:
//!
//! * Han: with language `zh`, each run of consecutive Han characters is cut by a dictionary
//!   segmenter (`jieba-rs`, its built-in dictionary plus HMM for unknown words, one lazily built
//!   instance shared by all threads). In any other language each ideograph is one word
//!   (UAX #29's own rule: there is no Japanese dictionary in the core).
//! * Kana: UAX #29 words: a Hiragana character is one word, a run of Katakana one word.
//! * Thai, Lao, Khmer, Myanmar: no dictionary in the core, so single characters (each with
//!   its combining marks: one UAX #29 segment).
//! * Hangul: UAX #29 words (Korean is written with spaces: one word per space-separated
//!   word, with attached punctuation dropped).
//!
//! Languages: `en` (any language written with spaces between words), `zh`, `ja`, `ko`, `th`;
//! `auto` is resolved from the script shares of a sample by [`detect_language`].
use crate::text::Unit;
use jieba_rs::Jieba;
use std::sync::OnceLock;
use unicode_segmentation::UnicodeSegmentation;

/// A language as far as tokenisation is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lang {
    /// Words separated by spaces (English and every other such language).
    En,
    Zh,
    Ja,
    Ko,
    Th,
}

/// Default character n-gram length of MinHash shingles for unspaced languages: chosen on
/// CrossWOZ (docs/metrics.md, "MinHash shingles per language").
pub const CJK_CHAR_NGRAM: usize = 3;

impl Lang {
    pub const ALL: [Lang; 5] = [Lang::En, Lang::Zh, Lang::Ja, Lang::Ko, Lang::Th];

    pub fn parse(s: &str) -> Result<Lang, String> {
        match s {
            "en" => Ok(Lang::En),
            "zh" => Ok(Lang::Zh),
            "ja" => Ok(Lang::Ja),
            "ko" => Ok(Lang::Ko),
            "th" => Ok(Lang::Th),
            "auto" => {
                Err("language 'auto' must be resolved first (detect_language on a sample)".into())
            }
            other => Err(format!(
                "language must be one of 'en', 'zh', 'ja', 'ko', 'th' (or 'auto'), got {other:?}"
            )),
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
            Lang::Ja => "ja",
            Lang::Ko => "ko",
            Lang::Th => "th",
        }
    }

    /// Which segmenter cuts words in this language (recorded in stage manifests).
    pub fn segmenter(self) -> &'static str {
        match self {
            Lang::En => "whitespace; chunks in unspaced scripts: UAX #29 words, Han as single characters",
            Lang::Zh => "jieba-rs 0.7 (default dictionary + HMM) on Han runs; UAX #29 words elsewhere",
            Lang::Ja => "UAX #29 words (Han and Hiragana as single characters, Katakana runs); no dictionary",
            Lang::Ko => "UAX #29 words (space-separated Hangul words)",
            Lang::Th => "single characters (UAX #29 segments); no dictionary",
        }
    }

    /// MinHash shingles when the user sets none: character n-grams for languages written
    /// without spaces, word 3-grams otherwise.
    pub fn default_shingles(self) -> (Unit, usize) {
        match self {
            Lang::Zh | Lang::Ja | Lang::Th => (Unit::Char, CJK_CHAR_NGRAM),
            Lang::En | Lang::Ko => (Unit::Word, 3),
        }
    }
}

/// Script classes the tokenizer cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    Han,
    Kana,
    Hangul,
    /// Thai, Lao, Khmer, Myanmar: written without spaces, no dictionary here.
    SouthEastAsian,
    Other,
}

pub fn script_of(c: char) -> Script {
    let u = c as u32;
    if u < 0x1000 {
        return if (0x0E00..=0x0EFF).contains(&u) {
            Script::SouthEastAsian
        } else {
            Script::Other
        };
    }
    match u {
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0xF900..=0xFAFF
        | 0x20000..=0x323AF
        | 0x3005
        | 0x3007 => Script::Han,
        0x3040..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9F => Script::Kana,
        0xAC00..=0xD7AF | 0x1100..=0x11FF | 0x3130..=0x318F => Script::Hangul,
        0x1000..=0x109F | 0x1780..=0x17FF => Script::SouthEastAsian,
        _ => Script::Other,
    }
}

/// A chunk holding one of these goes through UAX #29 instead of counting as one word.
#[inline]
pub fn needs_segmentation(c: char) -> bool {
    (c as u32) >= 0x0E00 && script_of(c) != Script::Other
}

/// How chunks are found and cleaned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Text metrics: split on Python's `str.split()` whitespace, strip ASCII punctuation at
    /// both ends of a spaced-script word.
    Lexical,
    /// MinHash word shingles (text already normalised): split on Unicode whitespace, words
    /// kept as they are.
    Shingle,
}

/// Python's `str.split()` whitespace (Unicode White_Space plus U+001C..U+001F).
#[inline]
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn jieba() -> &'static Jieba {
    static J: OnceLock<Jieba> = OnceLock::new();
    J.get_or_init(Jieba::new)
}

/// Call `f` with every word of `text` (slices of it), in order.
pub fn for_each_token<'a, F: FnMut(&'a str)>(text: &'a str, lang: Lang, style: Style, mut f: F) {
    let mut chunk_fn = |chunk: &'a str| {
        if chunk.is_empty() {
            return;
        }
        if chunk.is_ascii() || !chunk.chars().any(needs_segmentation) {
            let w = match style {
                Style::Lexical => chunk.trim_matches(|c: char| c.is_ascii_punctuation()),
                Style::Shingle => chunk,
            };
            if !w.is_empty() {
                f(w);
            }
        } else {
            segment_chunk(chunk, lang, &mut f);
        }
    };
    match style {
        Style::Lexical => text.split(is_py_space).for_each(&mut chunk_fn),
        Style::Shingle => text.split_whitespace().for_each(&mut chunk_fn),
    }
}

/// The lexical words of `text` (pushed onto `toks`) and its `words` count: a chunk in
/// spaced scripts counts as one word even when it is only punctuation (as Python's
/// `len(text.split())`, the count before this module), a segmented chunk as its words.
pub fn lexical_words<'a>(text: &'a str, lang: Lang, toks: &mut Vec<&'a str>) -> u64 {
    let mut words = 0u64;
    for chunk in text.split(is_py_space).filter(|c| !c.is_empty()) {
        if chunk.is_ascii() || !chunk.chars().any(needs_segmentation) {
            words += 1;
            let w = chunk.trim_matches(|c: char| c.is_ascii_punctuation());
            if !w.is_empty() {
                toks.push(w);
            }
        } else {
            let before = toks.len();
            segment_chunk(chunk, lang, &mut |w| toks.push(w));
            words += (toks.len() - before) as u64;
        }
    }
    words
}

/// Words of a chunk that holds unspaced-script characters.
fn segment_chunk<'a, F: FnMut(&'a str)>(chunk: &'a str, lang: Lang, f: &mut F) {
    let base = chunk.as_ptr() as usize;
    // Byte range of the pending Han run (jieba languages only).
    let mut run: Option<(usize, usize)> = None;
    let flush = |run: &mut Option<(usize, usize)>, f: &mut F| {
        if let Some((s, e)) = run.take() {
            let piece = &chunk[s..e];
            if e - s <= 3 {
                f(piece); // one ideograph: nothing to cut
            } else {
                for w in jieba().cut(piece, true) {
                    f(w);
                }
            }
        }
    };
    for seg in chunk.split_word_bounds() {
        let start = seg.as_ptr() as usize - base;
        let first = seg.chars().next().unwrap_or(' ');
        if lang == Lang::Zh && script_of(first) == Script::Han {
            match &mut run {
                Some((_, e)) if *e == start => *e = start + seg.len(),
                _ => {
                    flush(&mut run, f);
                    run = Some((start, start + seg.len()));
                }
            }
            continue;
        }
        flush(&mut run, f);
        if seg.chars().any(char::is_alphanumeric) {
            f(seg);
        }
    }
    flush(&mut run, f);
}

/// All words of a text as owned strings.
pub fn tokens(text: &str, lang: Lang, style: Style) -> Vec<&str> {
    let mut out = Vec::new();
    for_each_token(text, lang, style, |w| out.push(w));
    out
}

/// Characters of each text looked at by [`ScriptCounts::add`].
pub const DETECT_CHARS: usize = 256;

/// Letter counts per script over some texts (the first [`DETECT_CHARS`] of each).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScriptCounts {
    pub han: u64,
    pub kana: u64,
    pub hangul: u64,
    pub south_east_asian: u64,
    pub other_letters: u64,
}

impl ScriptCounts {
    pub fn add(&mut self, text: &str) {
        // The head of each text is enough to tell its script, and keeps detection cheap.
        // When its first DETECT_CHARS bytes are ASCII they are its first DETECT_CHARS
        // characters; otherwise one pass over the characters stops there.
        let head = &text.as_bytes()[..text.len().min(DETECT_CHARS)];
        if head.is_ascii() {
            self.other_letters += head.iter().filter(|b| b.is_ascii_alphabetic()).count() as u64;
            return;
        }
        for c in text.chars().take(DETECT_CHARS) {
            match script_of(c) {
                Script::Han => self.han += 1,
                Script::Kana => self.kana += 1,
                Script::Hangul => self.hangul += 1,
                Script::SouthEastAsian => self.south_east_asian += 1,
                Script::Other if c.is_alphabetic() => self.other_letters += 1,
                Script::Other => {}
            }
        }
    }

    /// The language whose tokenizer fits these counts. A Han or Kana character carries about
    /// as much as a word, a Latin letter a fifth of one, so unspaced scripts are weighed 5x:
    /// a Chinese text with English names and codes stays Chinese.
    pub fn language(&self) -> Lang {
        let weighted = |n: u64| 5 * n;
        let spaced = self.other_letters;
        let han_kana = weighted(self.han + self.kana);
        let candidates = [
            (
                han_kana,
                if self.kana * 10 >= self.han + self.kana && self.kana > 0 {
                    Lang::Ja
                } else {
                    Lang::Zh
                },
            ),
            (weighted(self.south_east_asian), Lang::Th),
            (self.hangul * 3, Lang::Ko),
        ];
        let (best, lang) = candidates
            .iter()
            .copied()
            .max_by_key(|c| c.0)
            .unwrap_or((0, Lang::En));
        if best > 0 && best >= spaced {
            lang
        } else {
            Lang::En
        }
    }
}

/// Resolve `auto`: the language of a sample of texts, by script shares.
pub fn detect_language<'a, I: IntoIterator<Item = &'a str>>(texts: I) -> Lang {
    let mut counts = ScriptCounts::default();
    for t in texts {
        counts.add(t);
    }
    counts.language()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaced_text_is_split_as_before() {
        let t = "Hello, world -- it's 3.5 apples! ΣΟΦΙΑ мир!";
        assert_eq!(
            tokens(t, Lang::Zh, Style::Lexical),
            vec!["Hello", "world", "it's", "3.5", "apples", "ΣΟΦΙΑ", "мир"]
        );
        assert_eq!(
            tokens("a -- b", Lang::En, Style::Shingle),
            vec!["a", "--", "b"]
        );
    }

    #[test]
    fn chinese_is_cut_by_the_dictionary() {
        let t = "我想找一家人均消费在100-150元的餐馆，吃驴杂汤。";
        let zh = tokens(t, Lang::Zh, Style::Lexical);
        assert!(zh.contains(&"餐馆"), "{zh:?}");
        assert!(zh.contains(&"100") && zh.contains(&"150"), "{zh:?}");
        assert!(!zh.iter().any(|w| w.contains('，') || w.contains('。')));
        // without a dictionary: one ideograph per word
        let en = tokens(t, Lang::En, Style::Lexical);
        assert!(en
            .iter()
            .filter(|w| w.chars().all(|c| script_of(c) == Script::Han))
            .all(|w| w.chars().count() == 1));
        assert!(zh.len() < en.len());
        // mixed: Latin words inside a Han chunk
        let mixed = tokens("我想订Hilton酒店", Lang::Zh, Style::Lexical);
        assert!(
            mixed.contains(&"Hilton") && mixed.contains(&"酒店"),
            "{mixed:?}"
        );
    }

    #[test]
    fn other_scripts_fall_back() {
        assert_eq!(
            tokens("สวัสดีครับ", Lang::Th, Style::Lexical).len(),
            "สวัสดีครับ".split_word_bounds().count()
        );
        assert_eq!(
            tokens("안녕하세요, 세계!", Lang::Ko, Style::Lexical),
            vec!["안녕하세요", "세계"]
        );
        let ja = tokens("コーヒーをください", Lang::Ja, Style::Lexical);
        assert_eq!(ja[0], "コーヒー");
    }

    #[test]
    fn detects_languages() {
        assert_eq!(detect_language(["hello world"]), Lang::En);
        assert_eq!(
            detect_language(["你好，我想订Hilton酒店，价格400-500元"]),
            Lang::Zh
        );
        assert_eq!(detect_language(["コーヒーをください。東京"]), Lang::Ja);
        assert_eq!(detect_language(["안녕하세요 세계"]), Lang::Ko);
        assert_eq!(detect_language(["สวัสดีครับ"]), Lang::Th);
        assert_eq!(detect_language(["Привет, мир"]), Lang::En);
        assert_eq!(detect_language(Vec::<&str>::new()), Lang::En);
        assert!(Lang::parse("auto").is_err());
        assert!(Lang::parse("xx").unwrap_err().contains("'zh'"));
    }
}
