//! `dialinsight_engine._core`: thin PyO3 bindings over the Rust core.
//!
//! Each `#[pyfunction]` here only converts its arguments, releases the GIL and calls into
//! the kernel modules ([`streams`] end to end over Arrow streams); arguments are checked
//! once, on this side, with errors that name the argument. MinHash settings cross as one
//! typed object, [`settings::MinHashSettings`]. Text columns come in through the Arrow
//! PyCapsule stream interface (`__arrow_c_stream__`, via `pyo3-arrow`), zero-copy, in
//! batches of [`arrow_io::BATCH_ROWS`] rows; results go back as Arrow tables (PyCapsule
//! again) or numpy arrays.
pub mod arrow_io;
pub mod clusters;
pub mod lsh;
pub mod metrics;
pub mod minhash;
pub mod settings;
pub mod streams;
pub mod text;
pub mod tokenize;

use arrow_array::RecordBatch;
use arrow_io::IoError;
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3_arrow::{PyArrayReader, PyTable};
use settings::MinHashSettings;
use std::collections::HashMap;
use streams::KeepBy;
use text::Unit;
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

fn lang(code: &str) -> PyResult<Lang> {
    Lang::parse(code).map_err(val_err)
}

/// One Arrow table from non-empty batches (the kernels return at least one).
fn table(batches: Vec<RecordBatch>) -> PyResult<PyTable> {
    let schema = batches[0].schema();
    PyTable::try_new(batches, schema)
}

type PermPair<'py> = (Bound<'py, PyArray1<u64>>, Bound<'py, PyArray1<u64>>);

/// Version of the compiled core (the crate version).
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// MinHash signatures of a string column stream: `(n, num_perm)` uint64 array.
#[pyfunction]
fn minhash_signatures<'py>(
    py: Python<'py>,
    texts: PyArrayReader,
    column: &str,
    settings: PyRef<'py, MinHashSettings>,
) -> PyResult<Bound<'py, PyArray2<u64>>> {
    let hasher = settings.hasher();
    let reader = texts.into_reader()?;
    let out = py
        .detach(|| streams::signatures(reader, column, &hasher))
        .map_err(io_err)?;
    let n = out.len() / hasher.num_perm();
    PyArray1::from_vec(py, out).reshape([n, hasher.num_perm()])
}

/// Near-duplicate clusters of a string column stream.
#[pyfunction]
#[pyo3(signature = (texts, column, settings, *, threshold, keep="first", quality=None, bands=None, rows=None))]
#[allow(clippy::too_many_arguments)]
fn near_duplicates(
    py: Python<'_>,
    texts: PyArrayReader,
    column: &str,
    settings: PyRef<'_, MinHashSettings>,
    threshold: f64,
    keep: &str,
    quality: Option<PyArrayReader>,
    bands: Option<usize>,
    rows: Option<usize>,
) -> PyResult<PyTable> {
    let hasher = settings.hasher();
    let banding =
        streams::banding(threshold, hasher.num_perm(), bands, rows).map_err(val_err)?;
    let keep = KeepBy::parse(keep, quality.is_some()).map_err(val_err)?;
    let reader = texts.into_reader()?;
    let qreader = quality.map(|q| q.into_reader()).transpose()?;
    let batch = py
        .detach(|| {
            streams::near_duplicates(reader, column, qreader, keep, &hasher, threshold, banding)
        })
        .map_err(io_err)?;
    table(vec![batch])
}

/// Rows of `texts` that are near-duplicates of rows of `reference`.
#[pyfunction]
#[pyo3(signature = (texts, column, reference, ref_column, settings, *, threshold, bands=None, rows=None))]
#[allow(clippy::too_many_arguments)]
fn contamination(
    py: Python<'_>,
    texts: PyArrayReader,
    column: &str,
    reference: PyArrayReader,
    ref_column: &str,
    settings: PyRef<'_, MinHashSettings>,
    threshold: f64,
    bands: Option<usize>,
    rows: Option<usize>,
) -> PyResult<PyTable> {
    let hasher = settings.hasher();
    let banding =
        streams::banding(threshold, hasher.num_perm(), bands, rows).map_err(val_err)?;
    let reader = texts.into_reader()?;
    let rreader = reference.into_reader()?;
    let batches = py
        .detach(|| {
            streams::contamination(reader, column, rreader, ref_column, &hasher, threshold, banding)
        })
        .map_err(io_err)?;
    table(batches)
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
    let extra = cues.map(streams::cues_from_map).transpose().map_err(val_err)?;
    let cfg = metrics::MetricsConfig::new(lang(language)?, instruction, extra.as_ref());
    let reader = texts.into_reader()?;
    let batches = py
        .detach(|| streams::text_metrics(reader, column, &cfg))
        .map_err(io_err)?;
    table(batches)
}

/// Words of every row (a `tokens` list column; null rows give null).
#[pyfunction]
#[pyo3(name = "tokenize", signature = (texts, column, language, lowercase=true))]
fn tokenize_texts(
    py: Python<'_>,
    texts: PyArrayReader,
    column: &str,
    language: &str,
    lowercase: bool,
) -> PyResult<PyTable> {
    let lang = lang(language)?;
    let reader = texts.into_reader()?;
    let batches = py
        .detach(|| streams::tokenize(reader, column, lang, lowercase))
        .map_err(io_err)?;
    table(batches)
}

/// The language whose tokenizer fits a (sample of a) string column, by script shares.
#[pyfunction]
fn detect_language(py: Python<'_>, texts: PyArrayReader, column: &str) -> PyResult<&'static str> {
    let reader = texts.into_reader()?;
    py.detach(|| streams::detect_language(reader, column))
        .map(Lang::code)
        .map_err(io_err)
}

/// How a language is tokenised: `(segmenter, default MinHash unit, default MinHash ngram)`.
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
    py.detach(|| streams::optimal_lsh_params(threshold, num_perm))
        .map_err(val_err)
}

/// The permutation parameters (a, b) of some settings (for checks against datasketch).
#[pyfunction]
fn permutations<'py>(py: Python<'py>, settings: PyRef<'py, MinHashSettings>) -> PermPair<'py> {
    let (a, b) = settings.hasher().perms.as_u64();
    (PyArray1::from_vec(py, a), PyArray1::from_vec(py, b))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<MinHashSettings>()?;
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
