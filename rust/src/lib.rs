//! `dialinsight_engine._core`: thin PyO3 bindings over the Rust core.
use pyo3::prelude::*;

/// Version of the compiled core (the crate version).
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(version, m)?)?;
    Ok(())
}
