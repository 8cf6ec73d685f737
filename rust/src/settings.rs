//! `MinHashSettings`: how texts are hashed, as one typed, frozen Python object.
//!
//! Every MinHash entry point of the extension takes one of these, so its arguments are
//! checked in exactly one place (here, [`MinHashSettings::new`]), with errors that name the
//! argument. Unset shingles take the language's defaults ([`Lang::default_shingles`]).
use crate::minhash::{MinHashParams, MinHasher, Mode};
use crate::text::{NormalizeOptions, Unit};
use crate::tokenize::Lang;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict};
use std::collections::BTreeMap;

/// Normalisation steps, in the order they are listed in messages and reprs.
pub const NORMALIZE_STEPS: [&str; 4] = ["lowercase", "nfkc", "punctuation", "whitespace"];

/// Largest `num_perm` accepted (signatures stay a few KiB per row).
pub const MAX_NUM_PERM: i64 = 4096;

fn value_error(msg: String) -> PyErr {
    PyValueError::new_err(msg)
}

/// `num_perm` as a count of permutations.
pub fn check_num_perm(num_perm: i64) -> Result<usize, String> {
    if (1..=MAX_NUM_PERM).contains(&num_perm) {
        Ok(num_perm as usize)
    } else {
        Err(format!(
            "num_perm must be in [1, {MAX_NUM_PERM}], got {num_perm}"
        ))
    }
}

/// The seed for a mode: any non-negative int natively; datasketch's numpy `RandomState`
/// takes 32 bits.
pub fn check_seed(seed: i64, mode: Mode) -> Result<u64, String> {
    if seed < 0 {
        return Err(format!("seed must be >= 0, got {seed}"));
    }
    if mode != Mode::Native && seed > u32::MAX as i64 {
        return Err(format!(
            "seed must be in [0, 2**32 - 1] in datasketch mode (numpy RandomState), got {seed}"
        ));
    }
    Ok(seed as u64)
}

/// `mode` and `scheme` together (the scheme only matters in datasketch mode, but a typo is
/// reported in either mode).
pub fn check_mode(mode: &str, scheme: &str) -> Result<Mode, String> {
    if !matches!(scheme, "legacy" | "affine32") {
        return Err(format!(
            "scheme must be 'legacy' or 'affine32', got {scheme:?}"
        ));
    }
    Mode::parse(mode, scheme)
}

/// Shingles: the given unit/ngram, or the language's defaults for the unset ones (an
/// explicit unit other than the default takes 3-grams).
pub fn shingles(unit: Option<&str>, ngram: Option<i64>, lang: Lang) -> Result<(Unit, usize), String> {
    let (default_unit, default_n) = lang.default_shingles();
    let unit = unit.map(Unit::parse).transpose()?.unwrap_or(default_unit);
    let n = match ngram {
        Some(n) if n < 1 => return Err(format!("ngram must be >= 1, got {n}")),
        Some(n) => n as usize,
        None if unit == default_unit => default_n,
        None => 3,
    };
    Ok((unit, n))
}

/// `normalize`: `None`/`True` every step, `False` none, or a dict of step -> bool (a
/// missing step is on).
fn normalize_options(normalize: Option<&Bound<'_, PyAny>>) -> PyResult<NormalizeOptions> {
    let Some(obj) = normalize else {
        return Ok(NormalizeOptions::ALL);
    };
    if obj.is_instance_of::<PyBool>() {
        return Ok(if obj.extract::<bool>()? {
            NormalizeOptions::ALL
        } else {
            NormalizeOptions::NONE
        });
    }
    if !obj.is_instance_of::<PyDict>() {
        return Err(value_error(format!(
            "normalize must be a bool or a dict of step -> bool (steps: {}), got {}",
            NORMALIZE_STEPS.join(", "),
            obj.repr()?
        )));
    }
    let steps: std::collections::HashMap<String, bool> = obj.extract().map_err(|_| {
        value_error(format!(
            "normalize must map step names to bools (steps: {})",
            NORMALIZE_STEPS.join(", ")
        ))
    })?;
    let mut unknown: Vec<&String> = steps
        .keys()
        .filter(|k| !NORMALIZE_STEPS.contains(&k.as_str()))
        .collect();
    if !unknown.is_empty() {
        unknown.sort();
        return Err(value_error(format!(
            "normalize has unknown steps {unknown:?}; known: {}",
            NORMALIZE_STEPS.join(", ")
        )));
    }
    let on = |step: &str| steps.get(step).copied().unwrap_or(true);
    Ok(NormalizeOptions {
        lowercase: on("lowercase"),
        nfkc: on("nfkc"),
        punctuation: on("punctuation"),
        whitespace: on("whitespace"),
    })
}

fn unit_name(unit: Unit) -> &'static str {
    match unit {
        Unit::Word => "word",
        Unit::Char => "char",
    }
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// How texts are MinHashed: permutations, shingles, normalisation, hash mode and the
/// language whose words make word shingles. Frozen; checked when built.
#[pyclass(frozen, eq, module = "dialinsight_engine._core")]
#[derive(Clone, Debug, PartialEq)]
pub struct MinHashSettings {
    pub params: MinHashParams,
    /// `scheme` as given (kept for the repr even in native mode, where it does not matter).
    scheme: &'static str,
}

impl MinHashSettings {
    /// The hasher for these settings (never fails: the settings were checked when built).
    pub fn hasher(&self) -> MinHasher {
        MinHasher::new(self.params.clone()).expect("settings are validated when built")
    }
}

#[pymethods]
impl MinHashSettings {
    #[new]
    #[pyo3(signature = (*, num_perm=128, seed=1, ngram=None, unit=None, normalize=None, mode="native", scheme="legacy", language="en"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        num_perm: i64,
        seed: i64,
        ngram: Option<i64>,
        unit: Option<&str>,
        normalize: Option<&Bound<'_, PyAny>>,
        mode: &str,
        scheme: &str,
        language: &str,
    ) -> PyResult<Self> {
        let num_perm = check_num_perm(num_perm).map_err(value_error)?;
        let mode_ = check_mode(mode, scheme).map_err(value_error)?;
        let seed = check_seed(seed, mode_).map_err(value_error)?;
        let lang = Lang::parse(language).map_err(value_error)?;
        let (unit, ngram) = shingles(unit, ngram, lang).map_err(value_error)?;
        let params = MinHashParams {
            num_perm,
            seed,
            ngram,
            unit,
            norm: normalize_options(normalize)?,
            mode: mode_,
            lang,
        };
        // Nothing left to reject: the checks above cover MinHashParams::validate.
        params.validate().map_err(value_error)?;
        let scheme = if scheme == "affine32" { "affine32" } else { "legacy" };
        Ok(MinHashSettings { params, scheme })
    }

    /// Permutations per signature.
    #[getter]
    fn num_perm(&self) -> usize {
        self.params.num_perm
    }

    /// Seed of the permutations.
    #[getter]
    fn seed(&self) -> u64 {
        self.params.seed
    }

    /// Units per shingle (resolved: never None).
    #[getter]
    fn ngram(&self) -> usize {
        self.params.ngram
    }

    /// "word" or "char" (resolved: never None).
    #[getter]
    fn unit(&self) -> &'static str {
        unit_name(self.params.unit)
    }

    /// Each normalisation step and whether it runs.
    #[getter]
    fn normalize(&self) -> BTreeMap<&'static str, bool> {
        // The step names sort alphabetically in the order the steps run.
        let n = &self.params.norm;
        NORMALIZE_STEPS
            .into_iter()
            .zip([n.lowercase, n.nfkc, n.punctuation, n.whitespace])
            .collect()
    }

    /// "native" or "datasketch".
    #[getter]
    fn mode(&self) -> &'static str {
        match self.params.mode {
            Mode::Native => "native",
            _ => "datasketch",
        }
    }

    /// datasketch's permutation scheme, "legacy" or "affine32".
    #[getter]
    fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// The tokenizer language: "en", "zh", "ja", "ko" or "th".
    #[getter]
    fn language(&self) -> &'static str {
        self.params.lang.code()
    }

    fn __repr__(&self) -> String {
        let norm = self
            .normalize()
            .into_iter()
            .map(|(k, v)| format!("'{k}': {}", py_bool(v)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "MinHashSettings(num_perm={}, seed={}, ngram={}, unit='{}', normalize={{{norm}}}, \
             mode='{}', scheme='{}', language='{}')",
            self.params.num_perm,
            self.params.seed,
            self.params.ngram,
            self.unit(),
            self.mode(),
            self.scheme,
            self.language()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_argument() {
        assert!(check_num_perm(0).unwrap_err().starts_with("num_perm"));
        assert!(check_num_perm(5000).unwrap_err().starts_with("num_perm"));
        assert_eq!(check_num_perm(128), Ok(128));
        assert!(check_seed(-1, Mode::Native).unwrap_err().starts_with("seed"));
        assert!(check_seed(1 << 33, Mode::DatasketchLegacy)
            .unwrap_err()
            .starts_with("seed"));
        assert_eq!(check_seed(1 << 33, Mode::Native), Ok(1 << 33));
        assert!(check_mode("other", "legacy").unwrap_err().starts_with("mode"));
        assert!(check_mode("native", "x").unwrap_err().starts_with("scheme"));
        assert!(shingles(Some("line"), None, Lang::En)
            .unwrap_err()
            .starts_with("unit"));
        assert!(shingles(None, Some(0), Lang::En)
            .unwrap_err()
            .starts_with("ngram"));
    }

    #[test]
    fn unset_shingles_follow_the_language() {
        assert_eq!(shingles(None, None, Lang::Zh), Ok((Unit::Char, 3)));
        assert_eq!(shingles(None, None, Lang::En), Ok((Unit::Word, 3)));
        assert_eq!(shingles(Some("word"), None, Lang::Zh), Ok((Unit::Word, 3)));
        assert_eq!(shingles(None, Some(5), Lang::Ja), Ok((Unit::Char, 5)));
    }
}
