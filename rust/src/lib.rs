//! `dialinsight_engine._core`: thin PyO3 bindings over the Rust core.
//!
//! Text columns come in through the Arrow PyCapsule stream interface
//! (`__arrow_c_stream__`, via `pyo3-arrow`), zero-copy, and are processed in batches of
//! [`arrow_io::BATCH_ROWS`] rows with the GIL released; results go back as Arrow tables
//! (PyCapsule again) or numpy arrays. The logic lives in the modules below.
pub mod arrow_io;
pub mod clusters;
pub mod lsh;
pub mod metrics;
pub mod minhash;
pub mod text;
pub mod tokenize;

use arrow_array::RecordBatch;
use arrow_io::{Column, IoError};
use clusters::Keep;
use minhash::{MinHashParams, MinHasher, Mode};
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3_arrow::{PyArrayReader, PyTable};
use rayon::prelude::*;
use std::collections::HashMap;
use text::{NormalizeOptions, Unit};
use tokenize::Lang;

fn io_err(e: IoError) -> PyErr {
    match e {
        IoError::Type(s) => PyTypeError::new_err(s),
        IoError::Value(s) => PyValueError::new_err(s),
    }
}

fn val_err(e: String) -> PyErr {
    PyValueError::new_err(e)
}

fn arrow_err(e: arrow_schema::ArrowError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

type Norm = (bool, bool, bool, bool);
type PermPair<'py> = (Bound<'py, PyArray1<u64>>, Bound<'py, PyArray1<u64>>);

/// How texts are hashed, as the Python side passes it: `(num_perm, seed, ngram, unit,
/// norm, mode, scheme, language)` (one tuple, so every MinHash entry point takes the same
/// argument; `language` already resolved from "auto").
type Hashing = (usize, u64, usize, String, Norm, String, String, String);

fn lang(code: &str) -> PyResult<Lang> {
    Lang::parse(code).map_err(val_err)
}

fn make_hasher(hashing: Hashing) -> PyResult<MinHasher> {
    let (num_perm, seed, ngram, unit, norm, mode, scheme, language) = hashing;
    let params = MinHashParams {
        num_perm,
        seed,
        ngram,
        unit: Unit::parse(&unit).map_err(val_err)?,
        norm: NormalizeOptions {
            lowercase: norm.0,
            nfkc: norm.1,
            punctuation: norm.2,
            whitespace: norm.3,
        },
        mode: Mode::parse(&mode, &scheme).map_err(val_err)?,
        lang: lang(&language)?,
    };
    MinHasher::new(params).map_err(val_err)
}

fn table(batches: Vec<RecordBatch>, schema_of_empty: RecordBatch) -> PyResult<PyTable> {
    let schema = schema_of_empty.schema();
    let batches = if batches.is_empty() {
        vec![schema_of_empty]
    } else {
        batches
    };
    PyTable::try_new(batches, schema)
}

/// Signatures of every row, flat `n * num_perm` (u32) plus per-row non-empty flags and
/// lengths in chars (for `keep="longest"`).
struct Signed {
    sigs: Vec<u32>,
    nonempty: Vec<bool>,
    chars: Vec<u64>,
}

fn sign_stream(
    reader: Box<dyn pyo3_arrow::ffi::ArrayReader + Send>,
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
    arrow_io::for_each_text_batch(reader, column, |_, vals| {
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

/// Version of the compiled core (the crate version).
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// MinHash signatures of a string column stream: `(n, num_perm)` uint64 array.
#[pyfunction]
#[pyo3(signature = (texts, column, hashing))]
fn minhash_signatures<'py>(
    py: Python<'py>,
    texts: PyArrayReader,
    column: &str,
    hashing: Hashing,
) -> PyResult<Bound<'py, PyArray2<u64>>> {
    let num_perm = hashing.0;
    let hasher = make_hasher(hashing)?;
    let reader = texts.into_reader()?;
    let out = py
        .detach(|| {
            let mut out: Vec<u64> = Vec::new();
            let mut buf: Vec<u32> = Vec::new();
            arrow_io::for_each_text_batch(reader, column, |_, vals| {
                buf.clear();
                buf.resize(vals.len() * num_perm, 0);
                hasher.signatures_into(vals, &mut buf);
                out.par_extend(buf.par_iter().map(|&v| v as u64));
                Ok(())
            })?;
            Ok::<_, IoError>(out)
        })
        .map_err(io_err)?;
    let n = out.len() / num_perm;
    PyArray1::from_vec(py, out).reshape([n, num_perm])
}

fn resolve_bands(
    threshold: f64,
    num_perm: usize,
    bands: Option<usize>,
    rows: Option<usize>,
) -> PyResult<(usize, usize)> {
    if !(0.0..=1.0).contains(&threshold) || threshold.is_nan() {
        return Err(val_err(format!(
            "threshold must be in [0, 1], got {threshold}"
        )));
    }
    let (b, r) = match (bands, rows) {
        (Some(b), Some(r)) => (b, r),
        (None, None) => lsh::optimal_param(threshold.clamp(1e-6, 1.0 - 1e-6), num_perm, 0.5, 0.5),
        _ => return Err(val_err("give both bands and rows, or neither".into())),
    };
    if b == 0 || r == 0 || b * r > num_perm {
        return Err(val_err(format!(
            "need bands*rows <= num_perm ({num_perm}), got {b}x{r}"
        )));
    }
    Ok((b, r))
}

/// Near-duplicate clusters of a string column stream.
#[pyfunction]
#[pyo3(signature = (texts, column, quality, keep, threshold, hashing, bands=None, rows=None))]
#[allow(clippy::too_many_arguments)]
fn near_duplicates(
    py: Python<'_>,
    texts: PyArrayReader,
    column: &str,
    quality: Option<PyArrayReader>,
    keep: &str,
    threshold: f64,
    hashing: Hashing,
    bands: Option<usize>,
    rows: Option<usize>,
) -> PyResult<PyTable> {
    let num_perm = hashing.0;
    let hasher = make_hasher(hashing)?;
    let (b, r) = resolve_bands(threshold, num_perm, bands, rows)?;
    if !matches!(keep, "first" | "longest" | "quality") {
        return Err(val_err(format!(
            "keep must be 'first', 'longest' or 'quality', got {keep:?}"
        )));
    }
    if keep == "quality" && quality.is_none() {
        return Err(val_err("keep='quality' needs a quality column".into()));
    }
    let reader = texts.into_reader()?;
    let qreader = quality.map(|q| q.into_reader()).transpose()?;
    let res = py
        .detach(|| {
            let signed = sign_stream(reader, column, &hasher, keep == "longest")?;
            let n = signed.nonempty.len();
            let keep_rule = match keep {
                "longest" => Keep::Longest(signed.chars),
                "quality" => {
                    let q = arrow_io::collect_f64(qreader.expect("checked"), "quality")?;
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
            Ok(clusters::cluster_signatures(
                &signed.sigs,
                num_perm,
                &signed.nonempty,
                b,
                r,
                threshold,
                &keep_rule,
            ))
        })
        .map_err(io_err)?;
    let batch = arrow_io::record_batch(vec![
        ("cluster_id", Column::U64(res.cluster_id)),
        ("duplicate_of", Column::OptU64(res.duplicate_of)),
        ("max_jaccard", Column::F64(res.max_jaccard)),
    ])
    .map_err(arrow_err)?;
    let schema = batch.schema();
    PyTable::try_new(vec![batch], schema)
}

/// Rows of `texts` that are near-duplicates of rows of `reference`.
#[pyfunction]
#[pyo3(signature = (texts, column, reference, ref_column, threshold, hashing, bands=None, rows=None))]
#[allow(clippy::too_many_arguments)]
fn contamination(
    py: Python<'_>,
    texts: PyArrayReader,
    column: &str,
    reference: PyArrayReader,
    ref_column: &str,
    threshold: f64,
    hashing: Hashing,
    bands: Option<usize>,
    rows: Option<usize>,
) -> PyResult<PyTable> {
    let num_perm = hashing.0;
    let hasher = make_hasher(hashing)?;
    let (b, r) = resolve_bands(threshold, num_perm, bands, rows)?;
    let reader = texts.into_reader()?;
    let rreader = reference.into_reader()?;
    let empty = arrow_io::record_batch(vec![
        ("ref_index", Column::OptU64(vec![])),
        ("max_jaccard", Column::F64(vec![])),
        ("contaminated", Column::Bool(vec![])),
    ])
    .map_err(arrow_err)?;
    let batches = py
        .detach(|| {
            let refs = sign_stream(rreader, ref_column, &hasher, false)?;
            let index = lsh::ReferenceIndex::build(&refs.sigs, num_perm, &refs.nonempty, b, r);
            let mut batches = Vec::new();
            let mut buf: Vec<u32> = Vec::new();
            arrow_io::for_each_text_batch(reader, column, |_, vals| {
                buf.clear();
                buf.resize(vals.len() * num_perm, 0);
                let ne = hasher.signatures_into(vals, &mut buf);
                let hits = clusters::query_reference(&index, &refs.sigs, &buf, &ne);
                let batch = arrow_io::record_batch(vec![
                    (
                        "ref_index",
                        Column::OptU64(hits.iter().map(|h| h.0).collect()),
                    ),
                    (
                        "max_jaccard",
                        Column::F64(hits.iter().map(|h| h.1).collect()),
                    ),
                    (
                        "contaminated",
                        Column::Bool(
                            hits.iter()
                                .map(|h| h.0.is_some() && h.1 >= threshold)
                                .collect(),
                        ),
                    ),
                ])?;
                batches.push(batch);
                Ok(())
            })?;
            Ok::<_, IoError>(batches)
        })
        .map_err(io_err)?;
    table(batches, empty)
}

/// Text-complexity metrics of a string column stream (one row per input row).
#[pyfunction]
#[pyo3(signature = (texts, column, instruction=false, language="en", cues=None))]
fn text_metrics(
    py: Python<'_>,
    texts: PyArrayReader,
    column: &str,
    instruction: bool,
    language: &str,
    cues: Option<HashMap<String, Vec<String>>>,
) -> PyResult<PyTable> {
    let extra = cues
        .map(|map| {
            let mut c = metrics::Cues::default();
            for (kind, phrases) in map {
                c.kind_mut(&kind)
                    .ok_or_else(|| {
                        val_err(format!(
                            "cue kind must be 'constraint', 'format' or 'step', got {kind:?}"
                        ))
                    })?
                    .extend(phrases);
            }
            Ok::<_, PyErr>(c)
        })
        .transpose()?;
    let cfg = metrics::MetricsConfig::new(lang(language)?, instruction, extra.as_ref());
    let reader = texts.into_reader()?;
    let build =
        |ms: Vec<Option<metrics::TextMetrics>>| -> Result<RecordBatch, arrow_schema::ArrowError> {
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
        };
    let empty = build(vec![]).map_err(arrow_err)?;
    let batches = py
        .detach(|| {
            let mut batches = Vec::new();
            arrow_io::for_each_text_batch(reader, column, |_, vals| {
                batches.push(build(metrics::batch_metrics(vals, &cfg))?);
                Ok(())
            })?;
            Ok::<_, IoError>(batches)
        })
        .map_err(io_err)?;
    table(batches, empty)
}

/// Words of every row (a `tokens` list column; null rows give null): the tokenizer every
/// kernel uses (`rust/src/tokenize.rs`), lexical style (ASCII punctuation trimmed off
/// spaced words), lowercased when asked.
#[pyfunction]
#[pyo3(name = "tokenize", signature = (texts, column, language, lowercase=true))]
fn tokenize_texts(
    py: Python<'_>,
    texts: PyArrayReader,
    column: &str,
    language: &str,
    lowercase: bool,
) -> PyResult<PyTable> {
    use arrow_array::builder::{ListBuilder, StringBuilder};
    let lang = lang(language)?;
    let reader = texts.into_reader()?;
    let to_batch = |rows: Vec<Option<Vec<String>>>| {
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
        let arr: arrow_array::ArrayRef = std::sync::Arc::new(b.finish());
        RecordBatch::try_from_iter([("tokens", arr)])
    };
    let empty = to_batch(vec![]).map_err(arrow_err)?;
    let batches = py
        .detach(|| {
            let mut batches = Vec::new();
            arrow_io::for_each_text_batch(reader, column, |_, vals| {
                let rows: Vec<Option<Vec<String>>> = vals
                    .par_iter()
                    .with_min_len(8)
                    .map(|t| {
                        t.map(|t| {
                            let lower;
                            let t = if lowercase {
                                lower = t.to_lowercase();
                                lower.as_str()
                            } else {
                                t
                            };
                            let mut toks = Vec::new();
                            tokenize::lexical_words(t, lang, &mut toks);
                            toks.into_iter().map(str::to_owned).collect()
                        })
                    })
                    .collect();
                batches.push(to_batch(rows)?);
                Ok(())
            })?;
            Ok::<_, IoError>(batches)
        })
        .map_err(io_err)?;
    table(batches, empty)
}

/// The language whose tokenizer fits a (sample of a) string column, by script shares:
/// "en" (written with spaces), "zh", "ja", "ko" or "th".
#[pyfunction]
fn detect_language(py: Python<'_>, texts: PyArrayReader, column: &str) -> PyResult<&'static str> {
    let reader = texts.into_reader()?;
    py.detach(|| {
        let mut counts = tokenize::ScriptCounts::default();
        arrow_io::for_each_text_batch(reader, column, |_, vals| {
            vals.iter().flatten().for_each(|t| counts.add(t));
            Ok(())
        })?;
        Ok::<_, IoError>(counts.language().code())
    })
    .map_err(io_err)
}

/// How a language is tokenised: `(segmenter description, default MinHash unit, default
/// MinHash ngram)`.
#[pyfunction]
fn language_info(language: &str) -> PyResult<(&'static str, &'static str, usize)> {
    let l = lang(language)?;
    let (unit, n) = l.default_shingles();
    let unit = match unit {
        Unit::Word => "word",
        Unit::Char => "char",
    };
    Ok((l.segmenter(), unit, n))
}

/// datasketch's `_optimal_param(threshold, num_perm, 0.5, 0.5)`: (bands, rows).
#[pyfunction]
fn optimal_lsh_params(py: Python<'_>, threshold: f64, num_perm: usize) -> PyResult<(usize, usize)> {
    if !(threshold > 0.0 && threshold < 1.0) {
        return Err(val_err(format!(
            "threshold must be in (0, 1), got {threshold}"
        )));
    }
    if num_perm == 0 {
        return Err(val_err("num_perm must be >= 1".into()));
    }
    Ok(py.detach(|| lsh::optimal_param(threshold, num_perm, 0.5, 0.5)))
}

/// The permutation parameters (a, b) used by a mode (for checks against datasketch).
#[pyfunction]
#[pyo3(signature = (num_perm, seed, mode="datasketch", scheme="legacy"))]
fn permutations<'py>(
    py: Python<'py>,
    num_perm: usize,
    seed: u64,
    mode: &str,
    scheme: &str,
) -> PyResult<PermPair<'py>> {
    let no_norm = (false, false, false, false);
    let h = make_hasher((
        num_perm,
        seed,
        1,
        "word".into(),
        no_norm,
        mode.into(),
        scheme.into(),
        "en".into(),
    ))?;
    let (a, b) = h.perms.as_u64();
    Ok((PyArray1::from_vec(py, a), PyArray1::from_vec(py, b)))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(minhash_signatures, m)?)?;
    m.add_function(wrap_pyfunction!(near_duplicates, m)?)?;
    m.add_function(wrap_pyfunction!(contamination, m)?)?;
    m.add_function(wrap_pyfunction!(text_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(optimal_lsh_params, m)?)?;
    m.add_function(wrap_pyfunction!(permutations, m)?)?;
    m.add_function(wrap_pyfunction!(tokenize_texts, m)?)?;
    m.add_function(wrap_pyfunction!(detect_language, m)?)?;
    m.add_function(wrap_pyfunction!(language_info, m)?)?;
    Ok(())
}
