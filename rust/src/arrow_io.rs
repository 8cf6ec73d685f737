//! Arrow side of the data exchange: string columns in (from an Arrow C stream, in
//! batches), numeric columns out. No Python here; `lib.rs` wires it to PyCapsules.
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, GenericStringArray, OffsetSizeTrait, RecordBatch,
    StringViewArray, UInt64Array,
};
use arrow_schema::{ArrowError, DataType, Field, Schema};
use rayon::prelude::*;
use std::sync::Arc;

/// Rows handed to the kernels at once: bounds memory of per-batch buffers (signatures of
/// a batch, metrics of a batch) whatever the chunking of the producer.
pub const BATCH_ROWS: usize = 16_384;

#[derive(Debug)]
pub enum IoError {
    /// Wrong column type (maps to Python TypeError).
    Type(String),
    /// Bad value (maps to Python ValueError).
    Value(String),
}

impl std::fmt::Display for IoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IoError::Type(s) | IoError::Value(s) => f.write_str(s),
        }
    }
}

impl From<ArrowError> for IoError {
    fn from(e: ArrowError) -> Self {
        IoError::Value(format!("Arrow stream error: {e}"))
    }
}

/// Check the Arrow type of a text column.
pub fn check_string_type(dt: &DataType, column: &str) -> Result<(), IoError> {
    match dt {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => Ok(()),
        other => Err(IoError::Type(format!(
            "column {column:?} has Arrow type {other}; expected a string column \
             (string, large_string or string_view)"
        ))),
    }
}

/// `bytes` as a `str`: checked with SIMD (simdutf8), and only on failure by the standard
/// library again, for the error's position.
#[inline]
pub fn validate_utf8(bytes: &[u8]) -> Result<&str, std::str::Utf8Error> {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(_) => std::str::from_utf8(bytes),
    }
}

fn invalid_utf8(column: &str, row: usize, e: std::str::Utf8Error) -> IoError {
    IoError::Value(format!(
        "column {column:?}, row {row} (0-based) is not valid UTF-8: {e}"
    ))
}

/// Validate every non-null value as UTF-8 (in parallel: on large columns this pass is a
/// tenth of the work). Imported Arrow buffers were never checked, and validating each value
/// on its own also proves every offset falls on a char boundary.
fn validated<'a>(
    len: usize,
    column: &str,
    first_row: usize,
    value: impl Fn(usize) -> Option<&'a [u8]> + Sync,
) -> Result<Vec<Option<&'a str>>, IoError> {
    let checked: Result<Vec<_>, IoError> = (0..len)
        .into_par_iter()
        .with_min_len(1024)
        .map(|i| match value(i) {
            None => Ok(None),
            Some(bytes) => validate_utf8(bytes)
                .map(Some)
                .map_err(|e| invalid_utf8(column, first_row + i, e)),
        })
        .collect();
    if checked.is_err() {
        // Name the first bad row whatever thread found one first.
        for i in 0..len {
            if let Some(bytes) = value(i) {
                if let Err(e) = std::str::from_utf8(bytes) {
                    return Err(invalid_utf8(column, first_row + i, e));
                }
            }
        }
    }
    checked
}

fn offsets_views<'a, O: OffsetSizeTrait>(
    a: &'a GenericStringArray<O>,
    column: &str,
    first_row: usize,
) -> Result<Vec<Option<&'a str>>, IoError> {
    let (values, offsets) = (a.value_data(), a.value_offsets());
    validated(a.len(), column, first_row, |i| {
        (!a.is_null(i)).then(|| &values[offsets[i].as_usize()..offsets[i + 1].as_usize()])
    })
}

fn view_values<'a>(
    a: &'a StringViewArray,
    column: &str,
    first_row: usize,
) -> Result<Vec<Option<&'a str>>, IoError> {
    validated(a.len(), column, first_row, |i| {
        (!a.is_null(i)).then(|| a.value(i).as_bytes())
    })
}

/// Borrow the values of one string array (any of the three layouts; an all-null array of
/// Arrow type null is accepted too).
pub fn string_values<'a>(arr: &'a ArrayRef, column: &str) -> Result<Vec<Option<&'a str>>, IoError> {
    string_values_at(arr, column, 0)
}

/// [`string_values`] of a slice whose first row is row `first_row` of the column (named in
/// errors).
pub fn string_values_at<'a>(
    arr: &'a ArrayRef,
    column: &str,
    first_row: usize,
) -> Result<Vec<Option<&'a str>>, IoError> {
    check_string_type(arr.data_type(), column)?;
    let any = arr.as_any();
    if let Some(a) = any.downcast_ref::<GenericStringArray<i32>>() {
        offsets_views(a, column, first_row)
    } else if let Some(a) = any.downcast_ref::<GenericStringArray<i64>>() {
        offsets_views(a, column, first_row)
    } else if let Some(a) = any.downcast_ref::<StringViewArray>() {
        view_values(a, column, first_row)
    } else {
        Ok(vec![None; arr.len()])
    }
}

/// Drive `f` over every batch of at most [`BATCH_ROWS`] rows of a string column stream.
/// `f` gets the global offset of the batch's first row and its values.
pub fn for_each_text_batch<I, F>(stream: I, column: &str, mut f: F) -> Result<usize, IoError>
where
    I: Iterator<Item = Result<ArrayRef, ArrowError>>,
    F: FnMut(usize, &[Option<&str>]) -> Result<(), IoError>,
{
    let mut offset = 0usize;
    for chunk in stream {
        let chunk = chunk?;
        check_string_type(chunk.data_type(), column)?;
        let mut start = 0;
        while start < chunk.len() {
            let len = BATCH_ROWS.min(chunk.len() - start);
            let part = chunk.slice(start, len);
            let values = string_values_at(&part, column, offset)?;
            f(offset, &values)?;
            offset += len;
            start += len;
        }
    }
    Ok(offset)
}

/// Collect a numeric stream as f64 (nulls and NaN become NaN). Accepts Float64 only: the
/// Python side casts first.
pub fn collect_f64<I>(stream: I, column: &str) -> Result<Vec<f64>, IoError>
where
    I: Iterator<Item = Result<ArrayRef, ArrowError>>,
{
    let mut out = Vec::new();
    for chunk in stream {
        let chunk = chunk?;
        let a = chunk
            .as_any()
            .downcast_ref::<Float64Array>()
            .ok_or_else(|| {
                IoError::Type(format!(
                    "column {column:?} has Arrow type {}; expected a numeric column",
                    chunk.data_type()
                ))
            })?;
        out.extend((0..a.len()).map(|i| if a.is_null(i) { f64::NAN } else { a.value(i) }));
    }
    Ok(out)
}

/// A named output column.
pub enum Column {
    U64(Vec<u64>),
    OptU64(Vec<Option<u64>>),
    F64(Vec<f64>),
    OptF64(Vec<Option<f64>>),
    Bool(Vec<bool>),
}

/// Build one record batch from named columns (all of the same length).
pub fn record_batch(cols: Vec<(&str, Column)>) -> Result<RecordBatch, ArrowError> {
    let mut fields = Vec::with_capacity(cols.len());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(cols.len());
    for (name, col) in cols {
        let (dt, arr): (DataType, ArrayRef) = match col {
            Column::U64(v) => (DataType::UInt64, Arc::new(UInt64Array::from(v))),
            Column::OptU64(v) => (DataType::UInt64, Arc::new(UInt64Array::from(v))),
            Column::F64(v) => (DataType::Float64, Arc::new(Float64Array::from(v))),
            Column::OptF64(v) => (DataType::Float64, Arc::new(Float64Array::from(v))),
            Column::Bool(v) => (DataType::Boolean, Arc::new(BooleanArray::from(v))),
        };
        fields.push(Field::new(name, dt, true));
        arrays.push(arr);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, LargeStringArray, StringArray};

    #[test]
    fn reads_all_string_layouts() {
        let v = vec![Some("a"), None, Some("日本")];
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(v.clone())),
            Arc::new(LargeStringArray::from(v.clone())),
            Arc::new(StringViewArray::from(v.clone())),
        ];
        for a in &arrays {
            assert_eq!(string_values(a, "t").unwrap(), v);
            let sliced = a.slice(1, 2);
            assert_eq!(string_values(&sliced, "t").unwrap(), v[1..].to_vec());
        }
    }

    #[test]
    fn rejects_non_string_naming_column() {
        let a: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        let err = string_values(&a, "score").unwrap_err();
        assert!(matches!(err, IoError::Type(_)));
        assert!(err.to_string().contains("\"score\""));
    }

    #[test]
    fn batches_large_chunks() {
        let n = BATCH_ROWS * 2 + 5;
        let a: ArrayRef = Arc::new(StringArray::from(vec![Some("x"); n]));
        let mut seen = Vec::new();
        let total = for_each_text_batch(std::iter::once(Ok(a)), "t", |off, vals| {
            seen.push((off, vals.len()));
            Ok(())
        })
        .unwrap();
        assert_eq!(total, n);
        assert_eq!(
            seen,
            vec![
                (0, BATCH_ROWS),
                (BATCH_ROWS, BATCH_ROWS),
                (2 * BATCH_ROWS, 5)
            ]
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use arrow_array::StringArray;
    use arrow_buffer::{Buffer, OffsetBuffer, ScalarBuffer};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn invalid_utf8_is_rejected_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let valid = std::str::from_utf8(&bytes).is_ok();
            prop_assert_eq!(crate::text::text_from_bytes(&bytes, 0).is_ok(), valid);
            // An Arrow string array whose producer broke the UTF-8 promise.
            let offsets = OffsetBuffer::new(ScalarBuffer::from(vec![0i32, bytes.len() as i32]));
            // SAFETY: deliberately unchecked to simulate a misbehaving producer.
            let arr = unsafe { StringArray::new_unchecked(offsets, Buffer::from_vec(bytes.clone()), None) };
            let arr: ArrayRef = Arc::new(arr);
            let got = string_values(&arr, "t");
            prop_assert_eq!(got.is_ok(), valid);
            if let Err(e) = got {
                prop_assert!(matches!(e, IoError::Value(_)));
                prop_assert!(e.to_string().contains("\"t\""));
                prop_assert!(e.to_string().contains("row 0"));
            }
        }
    }
}
