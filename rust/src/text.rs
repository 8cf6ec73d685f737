//! Text normalisation and shingling (word or character n-grams).
//!
//! Pure Rust, no Python: unit-tested with `cargo test`.
use crate::tokenize::{for_each_token, Lang, Style};
use unicode_normalization::char::canonical_combining_class;
use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

/// Which normalisation steps run before shingling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormalizeOptions {
    /// Lowercase (full Unicode lowercase mapping).
    pub lowercase: bool,
    /// Unicode NFKC (compatibility composition: full-width forms, ligatures, ...).
    pub nfkc: bool,
    /// Replace punctuation and symbols (any char that is neither alphanumeric nor
    /// whitespace) with a space.
    pub punctuation: bool,
    /// Collapse runs of whitespace into one ASCII space and trim both ends.
    pub whitespace: bool,
}

impl NormalizeOptions {
    pub const ALL: NormalizeOptions = NormalizeOptions {
        lowercase: true,
        nfkc: true,
        punctuation: true,
        whitespace: true,
    };
    pub const NONE: NormalizeOptions = NormalizeOptions {
        lowercase: false,
        nfkc: false,
        punctuation: false,
        whitespace: false,
    };
    pub fn is_noop(&self) -> bool {
        *self == Self::NONE
    }
}

/// Shingle unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Word,
    Char,
}

impl Unit {
    pub fn parse(s: &str) -> Result<Unit, String> {
        match s {
            "word" => Ok(Unit::Word),
            "char" => Ok(Unit::Char),
            other => Err(format!("unit must be 'word' or 'char', got {other:?}")),
        }
    }
}

/// `char::is_whitespace` restricted to ASCII (space, \t, \n, \x0b, \x0c, \r).
#[inline(always)]
pub fn is_ascii_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

#[inline]
fn push_folded(out: &mut String, c: char, opts: &NormalizeOptions, last_space: &mut bool) {
    let c = if opts.punctuation && !c.is_alphanumeric() && !c.is_whitespace() {
        ' '
    } else {
        c
    };
    if opts.whitespace && c.is_whitespace() {
        if !*last_space {
            out.push(' ');
            *last_space = true;
        }
        return;
    }
    *last_space = false;
    out.push(c);
}

/// [`char_classes`] bit: the character is an NFKC boundary (see [`is_nfkc_boundary`]).
const NFKC_BOUNDARY: u8 = 1;
/// [`char_classes`] bit: lowercasing keeps the character, it is alphanumeric (so
/// normalisation keeps it as it is, whatever the options).
const CASELESS_ALNUM: u8 = 2;
/// [`char_classes`] bit: lowercasing keeps the character, it is punctuation or a symbol (a
/// space when punctuation is folded, kept otherwise).
const CASELESS_PUNCT: u8 = 4;

/// Per-character class bits of the Basic Multilingual Plane, computed once from the very
/// predicates the slow path calls (so the fast path gives the same text): on CJK text the
/// Unicode table lookups per character (combining class, NFKC quick check, case,
/// alphanumeric) were a third of the MinHash time.
fn char_classes() -> &'static [u8] {
    static TABLE: std::sync::OnceLock<Box<[u8]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0u32..0x10000)
            .map(|u| char::from_u32(u).map_or(0, char_class))
            .collect()
    })
}

fn char_class(c: char) -> u8 {
    let mut class = 0;
    if canonical_combining_class(c) == 0
        && is_nfkc_quick(std::iter::once(c)) == IsNormalized::Yes
    {
        class |= NFKC_BOUNDARY;
    }
    let mut lower = c.to_lowercase();
    let caseless = lower.next() == Some(c) && lower.next().is_none();
    if caseless && c.is_alphanumeric() {
        class |= CASELESS_ALNUM;
    } else if caseless && !c.is_whitespace() {
        class |= CASELESS_PUNCT;
    }
    class
}

/// One ASCII byte: lowercase, punctuation to space, runs of spaces folded (the ASCII byte loop
/// and ASCII characters inside non-ASCII text share it). None when it folds into the space
/// just written.
#[inline(always)]
fn fold_ascii(b: u8, opts: &NormalizeOptions, last_space: &mut bool) -> Option<u8> {
    let b = if opts.lowercase {
        b.to_ascii_lowercase()
    } else {
        b
    };
    let b = if opts.punctuation && !b.is_ascii_alphanumeric() && !is_ascii_space(b) {
        b' '
    } else {
        b
    };
    if opts.whitespace && is_ascii_space(b) {
        if *last_space {
            return None;
        }
        *last_space = true;
        return Some(b' ');
    }
    *last_space = false;
    Some(b)
}

/// [`fold_ascii`] onto the end of `out`.
#[inline(always)]
fn fold_ascii_byte(b: u8, opts: &NormalizeOptions, out: &mut Vec<u8>, last_space: &mut bool) {
    if let Some(b) = fold_ascii(b, opts, last_space) {
        out.push(b);
    }
}

/// Where the simple path of normalisation ([`normalize_simple_with`]) puts its result.
trait SimpleSink {
    /// The character `c` is kept as it is.
    fn keep(&mut self, c: char);
    /// The character at bytes `i..end` of the source becomes the ASCII byte `b`, or nothing.
    fn replace(&mut self, i: usize, end: usize, b: Option<u8>);
}

/// The normalised text as bytes: runs of kept characters are copied in one go when a
/// character that changes (or the end) is reached, not one by one.
struct BytesSink<'a> {
    src: &'a [u8],
    out: &'a mut Vec<u8>,
    run: usize,
}

impl SimpleSink for BytesSink<'_> {
    #[inline(always)]
    fn keep(&mut self, _: char) {}

    #[inline(always)]
    fn replace(&mut self, i: usize, end: usize, b: Option<u8>) {
        self.out.extend_from_slice(&self.src[self.run..i]);
        self.out.extend(b);
        self.run = end;
    }
}

/// The codes of the normalised text's characters, without the text.
struct CodeSink<'a, F: Fn(char) -> u64> {
    out: &'a mut Vec<u64>,
    code: F,
}

impl<F: Fn(char) -> u64> SimpleSink for CodeSink<'_, F> {
    #[inline(always)]
    fn keep(&mut self, c: char) {
        self.out.push((self.code)(c));
    }

    #[inline(always)]
    fn replace(&mut self, _: usize, _: usize, b: Option<u8>) {
        if let Some(b) = b {
            self.out.push((self.code)(b as char));
        }
    }
}

/// The fast path of [`normalize_into`] for non-ASCII text in which every character
/// normalises on its own: ASCII, full-width ASCII forms and the ideographic space (mapped to
/// ASCII under NFKC), and caseless letters, digits and punctuation that are NFKC boundaries
/// (CJK ideographs, Kana, Hangul syllables, CJK punctuation...). NFKC of such a text is the
/// concatenation of its characters' NFKC (see [`for_each_nfkc_char`]), so one pass gives
/// every output character to `sink`. Returns false, the sink holding a partial result, at
/// the first other character (a combining mark, a cased letter, a compatibility
/// character...): the caller then runs the general path. The trailing space (when folding
/// whitespace) is left to the caller.
#[inline(always)]
fn normalize_simple_with<S: SimpleSink>(text: &str, opts: &NormalizeOptions, sink: &mut S) -> bool {
    let table = char_classes();
    let need = if opts.nfkc { NFKC_BOUNDARY } else { 0 };
    let mut last_space = true;
    for (i, c) in text.char_indices() {
        let u = c as u32;
        let ascii = match u {
            0..=0x7F => Some(u as u8),
            0xFF01..=0xFF5E if opts.nfkc => Some((u - 0xFEE0) as u8),
            0x3000 if opts.nfkc => Some(b' '),
            _ => None,
        };
        let replacement = if let Some(b) = ascii {
            b
        } else {
            let class = if u < 0x10000 { table[u as usize] } else { 0 };
            if class & need != need {
                return false;
            }
            if class & CASELESS_ALNUM != 0 || (class & CASELESS_PUNCT != 0 && !opts.punctuation) {
                last_space = false;
                sink.keep(c);
                continue;
            }
            if class & CASELESS_PUNCT == 0 {
                return false;
            }
            b' '
        };
        sink.replace(i, i + c.len_utf8(), fold_ascii(replacement, opts, &mut last_space));
    }
    true
}

/// [`normalize_simple_with`] into `out`.
fn normalize_simple(text: &str, opts: &NormalizeOptions, out: &mut String) -> bool {
    // SAFETY: only ASCII bytes and the complete UTF-8 encodings of characters of `text` are
    // written, so `out` stays valid UTF-8.
    let bytes = unsafe { out.as_mut_vec() };
    bytes.reserve(text.len());
    let mut sink = BytesSink {
        src: text.as_bytes(),
        out: bytes,
        run: 0,
    };
    let simple = normalize_simple_with(text, opts, &mut sink);
    if simple {
        sink.out.extend_from_slice(&sink.src[sink.run..]);
    }
    simple
}

/// `code(c)` for every character `c` of `normalize(text, opts)`, into `out` (cleared first).
/// Non-ASCII text that takes the simple path (see [`normalize_simple_with`]) gives its codes
/// in the same pass, without building the normalised text and decoding it again (on Chinese
/// text that second pass was a fifth of the MinHash time); other text is normalised into
/// `norm` first. `code` must be injective (the trailing space is found by its code).
pub fn normalized_char_codes<F: Fn(char) -> u64 + Copy>(
    text: &str,
    opts: &NormalizeOptions,
    norm: &mut String,
    code: F,
    out: &mut Vec<u64>,
) {
    out.clear();
    if !opts.is_noop() && !text.is_ascii() {
        out.reserve(text.len() / 2);
        if normalize_simple_with(text, opts, &mut CodeSink { out, code }) {
            if opts.whitespace && out.last() == Some(&code(' ')) {
                out.pop();
            }
            return;
        }
        out.clear();
    }
    let t: &str = if opts.is_noop() {
        text
    } else {
        normalize_into(text, opts, norm);
        norm.as_str()
    };
    if t.is_ascii() {
        out.extend(t.bytes().map(|b| code(b as char)));
    } else {
        out.extend(t.chars().map(code));
    }
}

/// Normalise `text` into `out` (cleared first).
pub fn normalize_into(text: &str, opts: &NormalizeOptions, out: &mut String) {
    out.clear();
    if opts.is_noop() {
        out.push_str(text);
        return;
    }
    // Leading whitespace is dropped when folding (as if a space was already written).
    let mut last_space = true;
    if text.is_ascii() {
        // NFKC is the identity on ASCII; lowercase is ASCII lowercase. Byte loop, written
        // straight into the string's buffer.
        let mut bytes = std::mem::take(out).into_bytes();
        bytes.reserve(text.len());
        for &b in text.as_bytes() {
            fold_ascii_byte(b, opts, &mut bytes, &mut last_space);
        }
        // SAFETY: only ASCII bytes were written.
        *out = unsafe { String::from_utf8_unchecked(bytes) };
    } else if !normalize_simple(text, opts, out) {
        out.clear();
        let table = char_classes();
        let mut lower_and_fold = |c: char, out: &mut String| {
            let u = c as u32;
            let class = if u < 0x80 {
                // ASCII inside non-ASCII text (digits, names, punctuation): the byte rules.
                // SAFETY: one ASCII byte keeps the string valid UTF-8.
                fold_ascii_byte(u as u8, opts, unsafe { out.as_mut_vec() }, &mut last_space);
                return;
            } else if u < 0x10000 {
                table[u as usize]
            } else {
                0
            };
            if class & CASELESS_ALNUM != 0 {
                // CJK ideographs, Kana, Hangul...: no case, not punctuation, not space
                last_space = false;
                out.push(c);
            } else if class & CASELESS_PUNCT != 0 {
                let c = if opts.punctuation { ' ' } else { c };
                push_folded(out, c, opts, &mut last_space);
            } else if opts.lowercase && !c.is_lowercase() {
                for l in c.to_lowercase() {
                    push_folded(out, l, opts, &mut last_space);
                }
            } else {
                push_folded(out, c, opts, &mut last_space);
            }
        };
        if opts.nfkc {
            for_each_nfkc_char(text, |c| lower_and_fold(c, out));
        } else {
            for c in text.chars() {
                lower_and_fold(c, out);
            }
        }
    }
    if opts.whitespace && out.ends_with(' ') {
        out.pop();
    }
}

/// A character at which NFKC may restart: it is unchanged by NFKC on its own and never
/// composes with what precedes it (quick check Yes, combining class 0), so NFKC of a text is
/// the concatenation of NFKC of the pieces that start at such characters (the "boundary
/// before" property that ICU uses for the same purpose).
#[inline]
fn is_nfkc_boundary(c: char) -> bool {
    let u = c as u32;
    // The common cases without a table lookup: ASCII, CJK ideographs, Hangul syllables
    // (a precomposed LV syllable can take a trailing jamo, but a syllable never combines
    // with what precedes it), Kana without the combining sound marks.
    if u < 0x80 || (0x4E00..=0x9FFF).contains(&u) || (0xAC00..=0xD7A3).contains(&u) {
        return true;
    }
    if u < 0x10000 {
        return char_classes()[u as usize] & NFKC_BOUNDARY != 0;
    }
    canonical_combining_class(c) == 0 && is_nfkc_quick(std::iter::once(c)) == IsNormalized::Yes
}

/// Full-width ASCII forms and the ideographic space: their NFKC is one ASCII character, and
/// replacing a character by its compatibility decomposition does not change the NFKC of the
/// text, so they are mapped here and then count as boundaries.
#[inline]
fn fullwidth_to_ascii(c: char) -> Option<char> {
    match c as u32 {
        u @ 0xFF01..=0xFF5E => char::from_u32(u - 0xFEE0),
        0x3000 => Some(' '),
        _ => None,
    }
}

/// Call `f` with every character of NFKC(`text`). Runs of boundary characters (see
/// [`is_nfkc_boundary`]) are passed through as they are and only the pieces around other
/// characters go through the full algorithm: on CJK text this is most of the NFKC cost saved.
pub fn for_each_nfkc_char<F: FnMut(char)>(text: &str, mut f: F) {
    // The current piece: byte start, and its only character while it holds one boundary
    // character and nothing else (emitted as is; otherwise the piece goes through NFKC).
    let mut piece: Option<(usize, Option<char>)> = None;
    let flush = |piece: Option<(usize, Option<char>)>, end: usize, f: &mut F| match piece {
        Some((_, Some(c))) => f(c),
        Some((s, None)) => text[s..end].nfkc().for_each(f),
        None => {}
    };
    for (i, c) in text.char_indices() {
        let mapped = fullwidth_to_ascii(c);
        if mapped.is_some() || is_nfkc_boundary(c) {
            flush(piece.take(), i, &mut f);
            piece = Some((i, Some(mapped.unwrap_or(c))));
        } else {
            piece = Some((piece.map_or(i, |p| p.0), None));
        }
    }
    flush(piece, text.len(), &mut f);
}

/// Normalise into a new string.
pub fn normalize(text: &str, opts: &NormalizeOptions) -> String {
    let mut s = String::new();
    normalize_into(text, opts, &mut s);
    s
}

/// Call `f` with the bytes of every shingle of an already-normalised text.
///
/// * Word unit: words are the tokens of [`crate::tokenize`] (whitespace-separated words;
///   chunks in scripts written without spaces are segmented per `lang`); a shingle is `ngram`
///   consecutive words joined by single ASCII spaces (utf-8 bytes).
/// * Char unit: a shingle is `ngram` consecutive Unicode scalar values (utf-8 bytes of
///   that substring).
/// * A text with at least one but fewer than `ngram` units yields exactly one shingle
///   made of all its units; an empty text yields none.
///
/// Returns the number of shingles emitted (with repeats).
pub fn for_each_shingle<F: FnMut(&[u8])>(
    text: &str,
    unit: Unit,
    ngram: usize,
    lang: Lang,
    buf: &mut Vec<u8>,
    f: F,
) -> usize {
    for_each_shingle_with(text, unit, ngram, lang, buf, &mut Vec::new(), f)
}

/// [`for_each_shingle`] with a caller-owned word buffer (no allocation per text in hot loops).
pub fn for_each_shingle_with<F: FnMut(&[u8])>(
    text: &str,
    unit: Unit,
    ngram: usize,
    lang: Lang,
    buf: &mut Vec<u8>,
    words: &mut Vec<(usize, usize)>,
    mut f: F,
) -> usize {
    let n = ngram.max(1);
    match unit {
        Unit::Word => {
            // Word byte ranges; ASCII text is split with a byte loop.
            words.clear();
            if text.is_ascii() {
                let b = text.as_bytes();
                let mut i = 0;
                while i < b.len() {
                    while i < b.len() && is_ascii_space(b[i]) {
                        i += 1;
                    }
                    let start = i;
                    while i < b.len() && !is_ascii_space(b[i]) {
                        i += 1;
                    }
                    if i > start {
                        words.push((start, i));
                    }
                }
            } else {
                let base = text.as_ptr() as usize;
                for_each_token(text, lang, Style::Shingle, |w| {
                    let s = w.as_ptr() as usize - base;
                    words.push((s, s + w.len()));
                });
            }
            if words.is_empty() {
                return 0;
            }
            let bytes = text.as_bytes();
            let mut emit = |ws: &[(usize, usize)], buf: &mut Vec<u8>| {
                // Contiguous when every gap is exactly one ASCII space (always so after
                // whitespace folding): hash the slice in place.
                if ws
                    .windows(2)
                    .all(|p| p[1].0 == p[0].1 + 1 && bytes[p[0].1] == b' ')
                {
                    f(&bytes[ws[0].0..ws[ws.len() - 1].1]);
                } else {
                    buf.clear();
                    for (i, &(s, e)) in ws.iter().enumerate() {
                        if i > 0 {
                            buf.push(b' ');
                        }
                        buf.extend_from_slice(&bytes[s..e]);
                    }
                    f(buf);
                }
            };
            if words.len() < n {
                emit(words, buf);
                return 1;
            }
            for win in words.windows(n) {
                emit(win, buf);
            }
            words.len() - n + 1
        }
        Unit::Char => {
            if text.is_empty() {
                return 0;
            }
            let bytes = text.as_bytes();
            if text.is_ascii() {
                if bytes.len() < n {
                    f(bytes);
                    return 1;
                }
                for win in bytes.windows(n) {
                    f(win);
                }
                return bytes.len() - n + 1;
            }
            // Char starts, in the caller's buffer (no allocation per text).
            words.clear();
            words.extend(text.char_indices().map(|(i, c)| (i, i + c.len_utf8())));
            let nchars = words.len();
            if nchars < n {
                f(bytes);
                return 1;
            }
            for i in 0..=(nchars - n) {
                f(&bytes[words[i].0..words[i + n - 1].1]);
            }
            nchars - n + 1
        }
    }
}

/// All shingles as owned strings (tests and debugging; the hot path uses
/// [`for_each_shingle`]).
pub fn shingles(text: &str, unit: Unit, ngram: usize) -> Vec<String> {
    shingles_in(text, unit, ngram, Lang::En)
}

/// [`shingles`] with the words of a given language.
pub fn shingles_in(text: &str, unit: Unit, ngram: usize, lang: Lang) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for_each_shingle(text, unit, ngram, lang, &mut buf, |b| {
        out.push(String::from_utf8(b.to_vec()).expect("shingles are utf-8"))
    });
    out
}

/// Validate raw bytes as UTF-8, naming the row on failure. Used by callers that hand
/// bytes (not Arrow strings) to the core.
pub fn text_from_bytes(bytes: &[u8], row: usize) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|e| format!("row {row} is not valid UTF-8: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_width_punct_space() {
        let s = normalize(
            "  Héllo,   WORLD!!  Ｆｕｌｌ\twidth ﬁ ",
            &NormalizeOptions::ALL,
        );
        assert_eq!(s, "héllo world full width fi");
        let s = normalize("A  b", &NormalizeOptions::NONE);
        assert_eq!(s, "A  b");
        let ascii = normalize("Hello, World -- ok?", &NormalizeOptions::ALL);
        assert_eq!(ascii, "hello world ok");
    }

    #[test]
    fn nfkc_fast_path_matches_full_nfkc() {
        for t in [
            "你好，世界！ＡＢＣ１２３\u{3000}ok",
            "e\u{301}te\u{301} ﬁ ①",
            "\u{301}leading mark",
            "한국어 \u{1100}\u{1161}\u{11a8} 가\u{11a8}",
            "ｶﾞ ガ か\u{3099} Ａ\u{301}",
            "…“引号”〇々",
            "",
        ] {
            let mut fast = String::new();
            for_each_nfkc_char(t, |c| fast.push(c));
            assert_eq!(fast, t.nfkc().collect::<String>(), "{t:?}");
        }
    }

    #[test]
    fn chinese_word_shingles_use_the_segmenter() {
        let t = normalize("我想找一家餐馆。", &NormalizeOptions::ALL);
        let zh = shingles_in(&t, Unit::Word, 1, Lang::Zh);
        assert!(zh.contains(&"餐馆".to_string()), "{zh:?}");
        let en = shingles_in(&t, Unit::Word, 1, Lang::En);
        assert!(en.iter().all(|w| w.chars().count() == 1), "{en:?}");
    }

    #[test]
    fn word_and_char_shingles() {
        assert_eq!(shingles("a b c d", Unit::Word, 3), vec!["a b c", "b c d"]);
        assert_eq!(shingles("a b", Unit::Word, 3), vec!["a b"]);
        assert!(shingles("", Unit::Word, 3).is_empty());
        assert!(shingles("   ", Unit::Word, 3).is_empty());
        assert_eq!(shingles("abcd", Unit::Char, 3), vec!["abc", "bcd"]);
        assert_eq!(
            shingles("日本語テキ", Unit::Char, 4),
            vec!["日本語テ", "本語テキ"]
        );
        assert_eq!(shingles("日本", Unit::Char, 4), vec!["日本"]);
    }

    /// The definition the fast paths must agree with: full NFKC, then per character
    /// lowercase and fold.
    fn reference_normalize(text: &str, opts: &NormalizeOptions) -> String {
        let t: String = if opts.nfkc {
            text.nfkc().collect()
        } else {
            text.to_string()
        };
        let (mut out, mut last_space) = (String::new(), true);
        for c in t.chars() {
            if opts.lowercase && !c.is_lowercase() {
                for l in c.to_lowercase() {
                    push_folded(&mut out, l, opts, &mut last_space);
                }
            } else {
                push_folded(&mut out, c, opts, &mut last_space);
            }
        }
        if opts.whitespace && out.ends_with(' ') {
            out.pop();
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn fast_paths_match_the_definition(
            t in "(\\PC|[你好，。！ＡＢ１\u{3000}「」、ｶﾞ\u{301}Ä ]){0,40}",
            steps in proptest::prelude::any::<[bool; 4]>(),
        ) {
            let opts = NormalizeOptions {
                lowercase: steps[0],
                nfkc: steps[1],
                punctuation: steps[2],
                whitespace: steps[3],
            };
            proptest::prop_assert_eq!(normalize(&t, &opts), reference_normalize(&t, &opts));
        }
    }

    #[test]
    fn non_utf8_rejected() {
        assert!(text_from_bytes(b"ok", 0).is_ok());
        let err = text_from_bytes(&[0x66, 0xff, 0x66], 7).unwrap_err();
        assert!(err.contains("row 7"));
    }
}
