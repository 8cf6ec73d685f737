//! The kernels end to end over Arrow streams: string column batches in (see
//! [`crate::arrow_io`]), signatures, clusters, metrics or tokens out. No Python here: `lib.rs`
//! only converts arguments, releases the GIL and calls these.
use crate::arrow_io::{self, Column, IoError};
use crate::clusters::{self, Keep};
use crate::lsh;
use crate::metrics::{self, MetricsConfig, TextMetrics};
use crate::minhash::MinHasher;
use crate::tokenize::{self, Lang};
use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::ArrowError;
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

/// What `text_metrics`, `tokenize`, ... read: batches of one string column.
pub trait TextStream: Iterator<Item = Result<ArrayRef, ArrowError>> {}
impl<I: Iterator<Item = Result<ArrayRef, ArrowError>>> TextStream for I {}

/// LSH banding for a Jaccard `threshold`: the given `bands` x `rows`, or datasketch's
/// optimal ones when both are unset.
pub fn banding(
    threshold: f64,
    num_perm: usize,
    bands: Option<usize>,
    rows: Option<usize>,
) -> Result<(usize, usize), String> {
    if !(0.0..=1.0).contains(&threshold) {
        return Err(format!("threshold must be in [0, 1], got {threshold}"));
    }
    let (b, r) = match (bands, rows) {
        (Some(b), Some(r)) => (b, r),
        (None, None) => lsh::optimal_param(threshold.clamp(1e-6, 1.0 - 1e-6), num_perm, 0.5, 0.5),
        _ => return Err("bands and rows: give both, or neither".into()),
    };
    if b == 0 || r == 0 || b * r > num_perm {
        return Err(format!(
            "bands and rows: need bands*rows <= num_perm ({num_perm}), got {b}x{r}"
        ));
    }
    Ok((b, r))
}

/// datasketch's `_optimal_param(threshold, num_perm, 0.5, 0.5)` after checking both.
pub fn optimal_lsh_params(threshold: f64, num_perm: usize) -> Result<(usize, usize), String> {
    if !(threshold > 0.0 && threshold < 1.0) {
        return Err(format!("threshold must be in (0, 1), got {threshold}"));
    }
    if num_perm == 0 {
        return Err("num_perm must be >= 1, got 0".into());
    }
    Ok(lsh::optimal_param(threshold, num_perm, 0.5, 0.5))
}

/// Which row of a near-duplicate cluster is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepBy {
    First,
    Longest,
    Quality,
}

impl KeepBy {
    pub fn parse(keep: &str, has_quality: bool) -> Result<KeepBy, String> {
        match keep {
            "first" => Ok(KeepBy::First),
            "longest" => Ok(KeepBy::Longest),
            "quality" if has_quality => Ok(KeepBy::Quality),
            "quality" => Err("keep='quality' needs a quality column".into()),
            other => Err(format!(
                "keep must be 'first', 'longest' or 'quality', got {other:?}"
            )),
        }
    }
}

/// Signatures of every row, flat `n * num_perm` (u32) plus per-row non-empty flags and
/// lengths in chars (for `keep="longest"`).
struct Signed {
    sigs: Vec<u32>,
    nonempty: Vec<bool>,
    chars: Vec<u64>,
}

fn sign_stream(
    texts: impl TextStream,
    column: &str,
    hasher: &MinHasher,
    with_chars: bool,
) -> Result<Signed, IoError> {
    let p = hasher.num_perm();
    let mut s = Signed {
        sigs: Vec::new(),
        nonempty: Vec::new(),
        chars: Vec::new(),
    };
    arrow_io::for_each_text_batch(texts, column, |_, vals| {
        let start = s.sigs.len();
        s.sigs.resize(start + vals.len() * p, 0);
        let ne = hasher.signatures_into(vals, &mut s.sigs[start..]);
        s.nonempty.extend(ne);
        if with_chars {
            s.chars.extend(
                vals.iter()
                    .map(|v| v.map_or(0, |t| t.chars().count() as u64)),
            );
        }
        Ok(())
    })?;
    Ok(s)
}

/// MinHash signatures of every row, flat `n * num_perm`, widened to u64 (numpy's dtype).
pub fn signatures(
    texts: impl TextStream,
    column: &str,
    hasher: &MinHasher,
) -> Result<Vec<u64>, IoError> {
    let mut out: Vec<u64> = Vec::new();
    let mut buf: Vec<u32> = Vec::new();
    arrow_io::for_each_text_batch(texts, column, |_, vals| {
        buf.clear();
        buf.resize(vals.len() * hasher.num_perm(), 0);
        hasher.signatures_into(vals, &mut buf);
        out.par_extend(buf.par_iter().map(|&v| v as u64));
        Ok(())
    })?;
    Ok(out)
}

/// Near-duplicate clusters: `cluster_id`, `duplicate_of`, `max_jaccard`, one row per row.
pub fn near_duplicates(
    texts: impl TextStream,
    column: &str,
    quality: Option<impl TextStream>,
    keep: KeepBy,
    hasher: &MinHasher,
    threshold: f64,
    (bands, rows): (usize, usize),
) -> Result<RecordBatch, IoError> {
    let signed = sign_stream(texts, column, hasher, keep == KeepBy::Longest)?;
    let n = signed.nonempty.len();
    let keep_rule = match (keep, quality) {
        (KeepBy::Longest, _) => Keep::Longest(signed.chars),
        (KeepBy::Quality, Some(q)) => {
            let q = arrow_io::collect_f64(q, "quality")?;
            if q.len() != n {
                return Err(IoError::Value(format!(
                    "quality column has {} rows, text column {n}",
                    q.len()
                )));
            }
            Keep::Quality(q)
        }
        _ => Keep::First,
    };
    let res = clusters::cluster_signatures(
        &signed.sigs,
        hasher.num_perm(),
        &signed.nonempty,
        bands,
        rows,
        threshold,
        &keep_rule,
    );
    Ok(arrow_io::record_batch(vec![
        ("cluster_id", Column::U64(res.cluster_id)),
        ("duplicate_of", Column::OptU64(res.duplicate_of)),
        ("max_jaccard", Column::F64(res.max_jaccard)),
    ])?)
}

/// Columns of [`contamination`]'s batches (also the schema of an empty result).
fn contamination_batch(hits: &[(Option<u64>, f64)], threshold: f64) -> Result<RecordBatch, ArrowError> {
    arrow_io::record_batch(vec![
        ("ref_index", Column::OptU64(hits.iter().map(|h| h.0).collect())),
        ("max_jaccard", Column::F64(hits.iter().map(|h| h.1).collect())),
        (
            "contaminated",
            Column::Bool(
                hits.iter()
                    .map(|h| h.0.is_some() && h.1 >= threshold)
                    .collect(),
            ),
        ),
    ])
}

/// Rows of `texts` near-duplicate to rows of `reference`: `ref_index`, `max_jaccard`,
/// `contaminated` per row of `texts`. Never empty: no rows gives one empty batch.
#[allow(clippy::too_many_arguments)]
pub fn contamination(
    texts: impl TextStream,
    column: &str,
    reference: impl TextStream,
    ref_column: &str,
    hasher: &MinHasher,
    threshold: f64,
    (bands, rows): (usize, usize),
) -> Result<Vec<RecordBatch>, IoError> {
    let num_perm = hasher.num_perm();
    let refs = sign_stream(reference, ref_column, hasher, false)?;
    let index = lsh::ReferenceIndex::build(&refs.sigs, num_perm, &refs.nonempty, bands, rows);
    let mut batches = Vec::new();
    let mut buf: Vec<u32> = Vec::new();
    arrow_io::for_each_text_batch(texts, column, |_, vals| {
        buf.clear();
        buf.resize(vals.len() * num_perm, 0);
        let ne = hasher.signatures_into(vals, &mut buf);
        let hits = clusters::query_reference(&index, &refs.sigs, &buf, &ne);
        batches.push(contamination_batch(&hits, threshold)?);
        Ok(())
    })?;
    if batches.is_empty() {
        batches.push(contamination_batch(&[], threshold)?);
    }
    Ok(batches)
}

/// Extra instruction cues by kind ("constraint", "format", "step").
pub fn cues_from_map(map: HashMap<String, Vec<String>>) -> Result<metrics::Cues, String> {
    let mut cues = metrics::Cues::default();
    for (kind, phrases) in map {
        cues.kind_mut(&kind)
            .ok_or_else(|| {
                format!("cue kinds must be 'constraint', 'format' or 'step'; got {kind:?}")
            })?
            .extend(phrases);
    }
    Ok(cues)
}

fn metrics_batch(ms: &[Option<TextMetrics>], instruction: bool) -> Result<RecordBatch, ArrowError> {
    macro_rules! col {
        ($name:ident, U64) => {
            (
                stringify!($name),
                Column::OptU64(ms.iter().map(|m| m.as_ref().map(|m| m.$name)).collect()),
            )
        };
        ($name:ident, F64) => {
            (
                stringify!($name),
                Column::OptF64(ms.iter().map(|m| m.as_ref().map(|m| m.$name)).collect()),
            )
        };
    }
    let mut cols = vec![
        col!(words, U64),
        col!(chars, U64),
        col!(approx_tokens, U64),
        col!(sentences, U64),
        col!(mean_sentence_words, F64),
        col!(ttr, F64),
        col!(mtld, F64),
        col!(word_entropy, F64),
        col!(distinct_1, F64),
        col!(distinct_2, F64),
        col!(char_rep_ratio, F64),
        col!(word_rep_ratio, F64),
    ];
    if instruction {
        cols.extend([
            col!(constraint_cues, U64),
            col!(enumerated_steps, U64),
            col!(question_marks, U64),
            col!(format_requirements, U64),
        ]);
    }
    arrow_io::record_batch(cols)
}

/// Text-complexity metrics, one row per row. Never empty (see [`contamination`]).
pub fn text_metrics(
    texts: impl TextStream,
    column: &str,
    cfg: &MetricsConfig,
) -> Result<Vec<RecordBatch>, IoError> {
    let mut batches = Vec::new();
    arrow_io::for_each_text_batch(texts, column, |_, vals| {
        batches.push(metrics_batch(&metrics::batch_metrics(vals, cfg), cfg.cues.is_some())?);
        Ok(())
    })?;
    if batches.is_empty() {
        batches.push(metrics_batch(&[], cfg.cues.is_some())?);
    }
    Ok(batches)
}

fn tokens_batch(rows: Vec<Option<Vec<&str>>>) -> Result<RecordBatch, ArrowError> {
    let mut b = ListBuilder::new(StringBuilder::new());
    for row in rows {
        match row {
            Some(words) => {
                for w in words {
                    b.values().append_value(w);
                }
                b.append(true);
            }
            None => b.append(false),
        }
    }
    let arr: ArrayRef = Arc::new(b.finish());
    RecordBatch::try_from_iter([("tokens", arr)])
}

/// The lexical words of every row (a `tokens` list column; null rows give null), lowercased
/// when asked. Never empty (see [`contamination`]).
pub fn tokenize(
    texts: impl TextStream,
    column: &str,
    lang: Lang,
    lowercase: bool,
) -> Result<Vec<RecordBatch>, IoError> {
    let mut batches = Vec::new();
    arrow_io::for_each_text_batch(texts, column, |_, vals| {
        let lowered: Vec<Option<std::borrow::Cow<str>>> = vals
            .par_iter()
            .with_min_len(8)
            .map(|t| t.map(|t| if lowercase { t.to_lowercase().into() } else { t.into() }))
            .collect();
        let rows: Vec<Option<Vec<&str>>> = lowered
            .par_iter()
            .with_min_len(8)
            .map(|t| {
                t.as_deref().map(|t| {
                    let mut toks = Vec::new();
                    tokenize::lexical_words(t, lang, &mut toks);
                    toks
                })
            })
            .collect();
        batches.push(tokens_batch(rows)?);
        Ok(())
    })?;
    if batches.is_empty() {
        batches.push(tokens_batch(vec![])?);
    }
    Ok(batches)
}

/// The language whose tokenizer fits all the rows, by script shares.
pub fn detect_language(texts: impl TextStream, column: &str) -> Result<Lang, IoError> {
    let mut counts = tokenize::ScriptCounts::default();
    arrow_io::for_each_text_batch(texts, column, |_, vals| {
        vals.iter().flatten().for_each(|t| counts.add(t));
        Ok(())
    })?;
    Ok(counts.language())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::minhash::{MinHashParams, Mode};
    use crate::text::{NormalizeOptions, Unit};
    use arrow_array::{Array, StringArray, UInt64Array};

    fn stream(rows: Vec<Option<&str>>) -> impl TextStream {
        let a: ArrayRef = Arc::new(StringArray::from(rows));
        std::iter::once(Ok(a))
    }

    fn hasher() -> MinHasher {
        MinHasher::new(MinHashParams {
            num_perm: 64,
            seed: 1,
            ngram: 3,
            unit: Unit::Word,
            norm: NormalizeOptions::ALL,
            mode: Mode::Native,
            lang: Lang::En,
        })
        .unwrap()
    }

    #[test]
    fn banding_checks_name_the_argument() {
        assert!(banding(1.5, 128, None, None).unwrap_err().starts_with("threshold"));
        assert!(banding(f64::NAN, 128, None, None).unwrap_err().starts_with("threshold"));
        assert!(banding(0.8, 128, Some(4), None).unwrap_err().starts_with("bands"));
        assert!(banding(0.8, 128, Some(64), Some(4)).unwrap_err().contains("num_perm"));
        assert_eq!(banding(0.8, 128, Some(16), Some(8)), Ok((16, 8)));
        assert!(optimal_lsh_params(0.0, 128).unwrap_err().starts_with("threshold"));
        assert!(KeepBy::parse("quality", false).unwrap_err().contains("quality column"));
        assert!(KeepBy::parse("best", true).unwrap_err().starts_with("keep"));
    }

    #[test]
    fn near_duplicates_end_to_end() {
        let text = "the quick brown fox jumps over the lazy dog again and again";
        let rows = vec![Some(text), Some("something else entirely different here"), Some(text), None];
        let batch = near_duplicates(
            stream(rows),
            "t",
            None::<std::iter::Empty<Result<ArrayRef, ArrowError>>>,
            KeepBy::First,
            &hasher(),
            0.8,
            banding(0.8, 64, None, None).unwrap(),
        )
        .unwrap();
        let dup = batch
            .column_by_name("duplicate_of")
            .unwrap()
            .as_any()
            .downcast_ref::<UInt64Array>()
            .unwrap();
        assert_eq!(dup.len(), 4);
        assert!(dup.is_null(0) && dup.is_null(1) && dup.is_null(3));
        assert_eq!(dup.value(2), 0);
    }

    #[test]
    fn empty_streams_keep_their_schema() {
        let none = || std::iter::empty::<Result<ArrayRef, ArrowError>>();
        let m = text_metrics(none(), "t", &MetricsConfig::new(Lang::En, true, None)).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].num_rows(), 0);
        assert!(m[0].schema().field_with_name("constraint_cues").is_ok());
        let t = tokenize(none(), "t", Lang::En, true).unwrap();
        assert_eq!(t[0].schema().field(0).name(), "tokens");
        assert!(cues_from_map(HashMap::from([("tone".into(), vec![])]))
            .unwrap_err()
            .starts_with("cue kinds"));
    }

    #[test]
    fn tokenize_and_detect() {
        let t = tokenize(stream(vec![Some("Hello, World"), None]), "t", Lang::En, true).unwrap();
        assert_eq!(t[0].num_rows(), 2);
        assert!(t[0].column(0).is_null(1));
        let lang = detect_language(stream(vec![Some("我想订酒店"), Some("ok")]), "t").unwrap();
        assert_eq!(lang, Lang::Zh);
    }
}
