//! NumPy `.npy` files in and out: little-endian f32 in C order only; everything else is a clear
//! error, and a hostile header is rejected in linear time without allocating for it. Writes are atomic (a temporary file in the same folder, then a rename), so a failure
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

/// A parsed `.npy` header.
#[derive(Debug, PartialEq)]
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// A strict, linear-time parser of the header dict (`{'descr': '<f4', 'fortran_order': False,
/// 'shape': (2, 3), }`). Reading is hand-written because our fuzzer found npyz 0.8's header
/// parser backtracking exponentially on 222 bytes of nested braces and overflowing on a huge
/// shape; npyz still writes the files.
fn parse_header(text: &str) -> Result<Header, String> {
    let b = text.trim_end().as_bytes();
    let mut i = 0;
    let ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    let expect = |i: &mut usize, c: u8| -> Result<(), String> {
        ws(i);
        if b.get(*i) == Some(&c) {
            *i += 1;
            Ok(())
        } else {
            Err(format!("header: expected `{}` at byte {}", c as char, *i))
        }
    };
    let string = |i: &mut usize| -> Result<String, String> {
        ws(i);
        let q = *b.get(*i).ok_or("header: unexpected end")?;
        if q != b'\'' && q != b'"' {
            return Err(format!("header: expected a quoted string at byte {}", *i));
        }
        let start = *i + 1;
        let len = b[start..].iter().position(|&c| c == q).ok_or("header: unterminated string")?;
        *i = start + len + 1;
        Ok(String::from_utf8_lossy(&b[start..start + len]).into_owned())
    };
    expect(&mut i, b'{')?;
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    loop {
        ws(&mut i);
        if b.get(i) == Some(&b'}') {
            i += 1;
            break;
        }
        let key = string(&mut i)?;
        expect(&mut i, b':')?;
        ws(&mut i);
        match key.as_str() {
            "descr" if descr.is_none() => descr = Some(string(&mut i)?),
            "fortran_order" if fortran_order.is_none() => {
                fortran_order = Some(if b[i..].starts_with(b"True") {
                    i += 4;
                    true
                } else if b[i..].starts_with(b"False") {
                    i += 5;
                    false
                } else {
                    return Err("header: fortran_order is not True or False".into());
                })
            }
            "shape" if shape.is_none() => {
                expect(&mut i, b'(')?;
                let mut dims = Vec::new();
                loop {
                    ws(&mut i);
                    if b.get(i) == Some(&b')') {
                        i += 1;
                        break;
                    }
                    let start = i;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    let digits = std::str::from_utf8(&b[start..i]).unwrap_or("");
                    let d = digits.parse::<usize>().map_err(|_| format!("header: bad dimension at byte {start}"))?;
                    dims.push(d);
                    ws(&mut i);
                    match b.get(i) {
                        Some(b',') => i += 1,
                        Some(b')') => {}
                        _ => return Err(format!("header: expected `,` or `)` at byte {i}")),
                    }
                }
                shape = Some(dims);
            }
            other => return Err(format!("header: unexpected or repeated key `{other}`")),
        }
        ws(&mut i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {}
            _ => return Err(format!("header: expected `,` or `}}` at byte {i}")),
        }
    }
    ws(&mut i);
    if i != b.len() {
        return Err("header: trailing bytes after the dict".into());
    }
    Ok(Header {
        descr: descr.ok_or("header: no descr")?,
        fortran_order: fortran_order.ok_or("header: no fortran_order")?,
        shape: shape.ok_or("header: no shape")?,
    })
}

/// Parses `.npy` bytes (`path` is only used in messages).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Array, NpyError> {
    let format = |what: String| NpyError::Format { path: path.to_path_buf(), what };
    if !bytes.starts_with(b"\x93NUMPY") {
        return Err(format("not a .npy file (no \\x93NUMPY magic)".into()));
    }
    let (start, len) = match bytes.get(6) {
        Some(1) if bytes.len() >= 10 => (10usize, usize::from(u16::from_le_bytes([bytes[8], bytes[9]]))),
        Some(2 | 3) if bytes.len() >= 12 => {
            (12, u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize)
        }
        _ => return Err(format("not a .npy file (unknown format version)".into())),
    };
    let end = start.saturating_add(len);
    let header = bytes.get(start..end).ok_or_else(|| format(format!("truncated header: it claims {len} bytes")))?;
    let header = std::str::from_utf8(header).map_err(|_| format("header is not text".into()))?;
    let h = parse_header(header).map_err(format)?;
    if h.descr != "<f4" {
        return Err(format(format!("dtype is {}, expected little-endian float32 ('<f4')", h.descr)));
    }
    if h.fortran_order {
        return Err(format("Fortran order; save it in C order (np.ascontiguousarray)".into()));
    }
    let count = h
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format(format!("shape {:?} has more elements than any file can hold", h.shape)))?;
    let data = &bytes[end..];
    let need = count.checked_mul(4).ok_or_else(|| format(format!("shape {:?} is too large", h.shape)))?;
    if data.len() != need {
        return Err(format(format!("shape {:?} needs {need} bytes of data, the file has {}", h.shape, data.len())));
    }
    let data = data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok(Array { shape: h.shape, data })
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
        // Found by the npy_header fuzz target: npyz's parser backtracked exponentially on this.
        let nested = b"\x93NUMPY\x01\x00\x76\x00{'descr': '<f8', 'fortran_order': False, 'shape':0,  {{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{( (5,   ";
        assert!(parse(p, nested).is_err());
        // Other header spellings numpy accepts: double quotes, no trailing comma, 1-d shapes.
        let ok = "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,)}";
        assert_eq!(parse_header(ok).unwrap().shape, vec![2]);
        assert_eq!(
            parse_header("{'descr': '<f4', 'fortran_order': False, 'shape': (), }").unwrap().shape,
            Vec::<usize>::new()
        );
    }
}
