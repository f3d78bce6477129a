//! NumPy `.npy` files in and out: little-endian f32 in C order only; everything else is a clear
//! error. Writes are atomic (a temporary file in the same folder, then a rename), so a failure
//! never leaves a partial output behind.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Why a `.npy` file could not be read or written.
#[derive(Debug)]
#[non_exhaustive]
pub enum NpyError {
    /// The file could not be opened, read, written or renamed.
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a valid `.npy` file (bad magic, header, or data).
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

impl fmt::Display for NpyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NpyError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            NpyError::Format { path, what } => write!(f, "{}: {what}", path.display()),
        }
    }
}

impl std::error::Error for NpyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NpyError::Io { source, .. } => Some(source),
            NpyError::Format { .. } => None,
        }
    }
}

/// An f32 array: its shape and its elements in C order.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` elements.
    pub data: Vec<f32>,
}

/// The `shape` tuple of a `.npy` header, read without trusting it: `None` when the header cannot
/// be found (npyz then reports the malformed file), `Err` when a dimension or the element count
/// overflows. npyz multiplies the dimensions unchecked, which panics (or wraps) on a hostile
/// header, so this runs first.
fn header_element_count(bytes: &[u8]) -> Option<Result<u128, String>> {
    let (len, start) = match bytes.get(6)? {
        1 => (u16::from_le_bytes([*bytes.get(8)?, *bytes.get(9)?]) as usize, 10usize),
        2 | 3 => (u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?) as usize, 12),
        _ => return None,
    };
    let header = std::str::from_utf8(bytes.get(start..start.checked_add(len)?)?).ok()?;
    let after = &header[header.find("'shape'")? + "'shape'".len()..];
    let tuple = &after[after.find('(')? + 1..];
    let tuple = &tuple[..tuple.find(')')?];
    let mut count: u128 = 1;
    for dim in tuple.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let Ok(d) = dim.parse::<u64>() else {
            return Some(Err(format!("shape dimension `{dim}` is not a non-negative integer")));
        };
        count = match count.checked_mul(u128::from(d)) {
            Some(c) if c <= u128::from(u64::MAX) => c,
            _ => return Some(Err(format!("shape ({tuple}) has more elements than any file can hold"))),
        };
    }
    Some(Ok(count))
}

/// Parses `.npy` bytes (`path` is only used in messages).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Array, NpyError> {
    let format = |what: String| NpyError::Format { path: path.to_path_buf(), what };
    if !bytes.starts_with(b"\x93NUMPY") {
        return Err(format("not a .npy file (no \\x93NUMPY magic)".into()));
    }
    if let Some(count) = header_element_count(bytes) {
        let count = count.map_err(format)?;
        let available = (bytes.len() / std::mem::size_of::<f32>()) as u128;
        if count > available {
            return Err(format(format!(
                "the header claims {count} elements but the file holds at most {available} floats"
            )));
        }
    }
    let npy = npyz::NpyFile::new(bytes).map_err(|e| format(format!("not a .npy file ({e})")))?;
    let dtype = npy.dtype();
    let want: npyz::TypeStr = "<f4".parse().map_err(|_| format("internal: bad type string".into()))?;
    if dtype != npyz::DType::Plain(want) {
        return Err(format(format!("dtype is {}, expected little-endian float32 ('<f4')", dtype.descr())));
    }
    if npy.order() != npyz::Order::C {
        return Err(format("Fortran order; save it in C order (np.ascontiguousarray)".into()));
    }
    let mut shape = Vec::with_capacity(npy.shape().len());
    let mut count = 1usize;
    for &d in npy.shape() {
        let d = usize::try_from(d).map_err(|_| format(format!("dimension {d} does not fit in memory")))?;
        count = count.checked_mul(d).ok_or_else(|| format("the shape's element count overflows".into()))?;
        shape.push(d);
    }
    // The header may claim anything: check it against the bytes that are really there before
    // allocating for it.
    let available = bytes.len() / std::mem::size_of::<f32>();
    if count > available {
        return Err(format(format!("shape {shape:?} needs {count} floats but the file holds at most {available}")));
    }
    let data = npy.into_vec::<f32>().map_err(|e| format(format!("data: {e}")))?;
    if data.len() != count {
        return Err(format(format!("shape {shape:?} needs {count} floats, the data has {}", data.len())));
    }
    Ok(Array { shape, data })
}

/// Reads an f32 C-order `.npy` file.
pub fn read(path: &Path) -> Result<Array, NpyError> {
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io { path: path.to_path_buf(), source })?;
    parse(path, &bytes)
}

/// The `.npy` bytes of an f32 array in C order.
pub fn to_bytes(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + 4 * data.len());
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    use npyz::WriterBuilder as _;
    // Writing into a Vec cannot fail.
    if let Ok(mut w) = npyz::WriteOptions::new().default_dtype().shape(&shape).writer(&mut out).begin_nd() {
        let _ = w.extend(data.iter().copied());
        let _ = w.finish();
    }
    out
}

/// Writes an f32 array atomically: the file at `path` is either the complete new array or
/// untouched (a temporary file in the same folder is written, synced, then renamed over it).
pub fn write(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), NpyError> {
    let io = |source| NpyError::Io { path: path.to_path_buf(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| NpyError::Format { path: path.to_path_buf(), what: "not a file name".into() })?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&to_bytes(shape, data))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let p = Path::new("x.npy");
        let bytes = to_bytes(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let a = parse(p, &bytes).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data[5], 6.0);
        // Truncated data.
        assert!(parse(p, &bytes[..bytes.len() - 4]).is_err());
        // Garbage.
        assert!(parse(p, b"not numpy at all").is_err());
        // A header claiming an absurd shape is refused before npyz multiplies it out.
        let dict = b"{'descr': '<f4', 'fortran_order': False, 'shape': (9999999999999, 9999999999999), }    \n";
        let mut hostile = b"\x93NUMPY\x01\x00".to_vec();
        hostile.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        hostile.extend_from_slice(dict);
        hostile.extend_from_slice(&[0; 16]);
        let err = parse(p, &hostile).unwrap_err().to_string();
        assert!(err.contains("more elements"), "{err}");
    }
}
