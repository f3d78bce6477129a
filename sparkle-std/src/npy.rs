//! NumPy `.npy` files in and out: C order, little-endian `float32` (the default), `uint8`, `int8`
//! and `int32` (the quantized ops' tensors); everything else is a clear error. A hostile header is rejected in linear time without allocating for it; only regular
//! files are read, and only after the size the header declares matches the file; allocation is
//! fallible and within a [`MemoryBudget`]. Writes are atomic ([`files::write_atomic`]), so a
//! failure never leaves a partial output behind.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::budget::MemoryBudget;
use crate::files;

/// Why a `.npy` file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NpyError {
    /// The file could not be opened, read, written or renamed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a valid `.npy` file (bad magic, header, or data).
    #[error("{}: {what}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// An array (f32 unless another [`Element`] is named): its shape and its elements in C order.
#[derive(Clone, Debug, PartialEq)]
pub struct Array<T = f32> {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` elements.
    pub data: Vec<T>,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for u8 {}
    impl Sealed for i8 {}
    impl Sealed for i32 {}
    impl Sealed for sparkle_core::f16::f16 {}
}

/// An element type `.npy` files are read and written in.
pub trait Element: Copy + npyz::AutoSerialize + sealed::Sealed + 'static {
    /// The header's `descr` values that mean this type (numpy writes `|u1` for one byte).
    const DESCR: &'static [&'static str];
    /// The numpy name, for messages.
    const NAME: &'static str;
    /// Bytes per element.
    const SIZE: usize;
    /// From `SIZE` little-endian bytes.
    fn from_le(b: &[u8]) -> Self;
}

impl Element for f32 {
    const DESCR: &'static [&'static str] = &["<f4"];
    const NAME: &'static str = "float32";
    const SIZE: usize = 4;
    fn from_le(b: &[u8]) -> Self {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}
impl Element for u8 {
    const DESCR: &'static [&'static str] = &["|u1", "<u1"];
    const NAME: &'static str = "uint8";
    const SIZE: usize = 1;
    fn from_le(b: &[u8]) -> Self {
        b[0]
    }
}
impl Element for i8 {
    const DESCR: &'static [&'static str] = &["|i1", "<i1"];
    const NAME: &'static str = "int8";
    const SIZE: usize = 1;
    fn from_le(b: &[u8]) -> Self {
        b[0] as i8
    }
}
impl Element for i32 {
    const DESCR: &'static [&'static str] = &["<i4"];
    const NAME: &'static str = "int32";
    const SIZE: usize = 4;
    fn from_le(b: &[u8]) -> Self {
        i32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl Element for sparkle_core::f16::f16 {
    const DESCR: &'static [&'static str] = &["<f2"];
    const NAME: &'static str = "float16";
    const SIZE: usize = 2;
    fn from_le(b: &[u8]) -> Self {
        sparkle_core::f16::f16::from_le_bytes([b[0], b[1]])
    }
}

/// An array of whichever supported type its file holds.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyArray {
    /// float32.
    F32(Array<f32>),
    /// uint8.
    U8(Array<u8>),
    /// int8.
    I8(Array<i8>),
    /// int32.
    I32(Array<i32>),
    /// float16.
    F16(Array<sparkle_core::f16::f16>),
}

impl AnyArray {
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            AnyArray::F32(a) => &a.shape,
            AnyArray::U8(a) => &a.shape,
            AnyArray::I8(a) => &a.shape,
            AnyArray::I32(a) => &a.shape,
            AnyArray::F16(a) => &a.shape,
        }
    }

    /// The numpy name of the element type.
    pub fn dtype(&self) -> &'static str {
        match self {
            AnyArray::F32(_) => f32::NAME,
            AnyArray::U8(_) => u8::NAME,
            AnyArray::I8(_) => i8::NAME,
            AnyArray::I32(_) => i32::NAME,
            AnyArray::F16(_) => sparkle_core::f16::f16::NAME,
        }
    }

    /// Bytes of data.
    pub fn data_bytes(&self) -> u64 {
        let (count, size) = match self {
            AnyArray::F32(a) => (a.data.len(), 4),
            AnyArray::U8(a) => (a.data.len(), 1),
            AnyArray::I8(a) => (a.data.len(), 1),
            AnyArray::I32(a) => (a.data.len(), 4),
            AnyArray::F16(a) => (a.data.len(), 2),
        };
        count as u64 * size
    }
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

/// The longest header accepted (numpy itself refuses headers over 10,000 bytes by default).
pub const MAX_HEADER: usize = 65_536;

/// From the first bytes of a file (at least 12, or all of a shorter file): where the header text
/// starts and how long it is.
fn prefix(bytes: &[u8]) -> Result<(usize, usize), String> {
    if !bytes.starts_with(b"\x93NUMPY") {
        return Err("not a .npy file (no \\x93NUMPY magic)".into());
    }
    let (start, len) = match bytes.get(6) {
        Some(1) if bytes.len() >= 10 => (10usize, usize::from(u16::from_le_bytes([bytes[8], bytes[9]]))),
        Some(2 | 3) if bytes.len() >= 12 => {
            (12, u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize)
        }
        _ => return Err("not a .npy file (unknown format version)".into()),
    };
    if len > MAX_HEADER {
        return Err(format!("header of {len} bytes is longer than the {MAX_HEADER} accepted"));
    }
    Ok((start, len))
}

/// The element type a header declares, if it is one of [`AnyArray`]'s.
fn header_descr(header: &[u8]) -> Result<String, String> {
    let header = std::str::from_utf8(header).map_err(|_| "header is not text".to_string())?;
    Ok(parse_header(header)?.descr)
}

/// The shape and data size a header declares, if it is a C-order array of `T`.
fn describe<T: Element>(header: &[u8]) -> Result<(Vec<usize>, usize, usize), String> {
    let header = std::str::from_utf8(header).map_err(|_| "header is not text".to_string())?;
    let h = parse_header(header)?;
    if !T::DESCR.contains(&h.descr.as_str()) {
        return Err(format!("dtype is {}, expected little-endian {} ('{}')", h.descr, T::NAME, T::DESCR[0]));
    }
    if h.fortran_order {
        return Err("Fortran order; save it in C order (np.ascontiguousarray)".into());
    }
    let count = h
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {:?} has more elements than any file can hold", h.shape))?;
    let need = count.checked_mul(T::SIZE).ok_or_else(|| format!("shape {:?} is too large", h.shape))?;
    Ok((h.shape, count, need))
}

fn size_mismatch(shape: &[usize], need: usize, found: u64) -> String {
    format!("shape {shape:?} needs {need} bytes of data, the file has {found}")
}

/// Parses `.npy` bytes (`path` is only used in messages).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Array, NpyError> {
    let format = |what: String| NpyError::Format { path: path.to_path_buf(), what };
    let (start, len) = prefix(bytes).map_err(format)?;
    let end = start + len;
    let header = bytes.get(start..end).ok_or_else(|| format(format!("truncated header: it claims {len} bytes")))?;
    let (shape, _, need) = describe::<f32>(header).map_err(format)?;
    let data = &bytes[end..];
    if data.len() != need {
        return Err(format(size_mismatch(&shape, need, data.len() as u64)));
    }
    let data = data.chunks_exact(4).map(f32::from_le).collect();
    Ok(Array { shape, data })
}

/// Reads an f32 C-order `.npy` file with no limit on its size other than the allocator's (see
/// [`read_within`]).
pub fn read(path: &Path) -> Result<Array, NpyError> {
    read_within(path, MemoryBudget::UNLIMITED)
}

/// Reads an f32 C-order `.npy` file whose data fits `budget` ([`read_typed_within`] for f32).
pub fn read_within(path: &Path, budget: MemoryBudget) -> Result<Array, NpyError> {
    read_typed_within(path, budget)
}

/// Reads a C-order `.npy` file of whichever supported element type it holds, within `budget`.
pub fn read_any_within(path: &Path, budget: MemoryBudget) -> Result<AnyArray, NpyError> {
    let (descr, _) = open_header(path)?;
    let d = descr.as_str();
    Ok(if f32::DESCR.contains(&d) {
        AnyArray::F32(read_typed_within(path, budget)?)
    } else if u8::DESCR.contains(&d) {
        AnyArray::U8(read_typed_within(path, budget)?)
    } else if i8::DESCR.contains(&d) {
        AnyArray::I8(read_typed_within(path, budget)?)
    } else if i32::DESCR.contains(&d) {
        AnyArray::I32(read_typed_within(path, budget)?)
    } else if sparkle_core::f16::f16::DESCR.contains(&d) {
        AnyArray::F16(read_typed_within(path, budget)?)
    } else {
        let what = format!(
            "dtype is {descr}; supported: float32 ('<f4'), float16 ('<f2'), uint8 ('|u1'), int8 ('|i1'), int32 ('<i4')"
        );
        return Err(NpyError::Format { path: path.to_path_buf(), what });
    })
}

/// A file opened past its header: the reader, the file's length, the header's bytes and where
/// the header ends.
struct Opened {
    r: std::io::BufReader<std::fs::File>,
    file_len: u64,
    header: Vec<u8>,
    end: usize,
}

/// Opens a regular file and reads its header: the header's `descr`, and the file positioned
/// after the header.
fn open_header(path: &Path) -> Result<(String, Opened), NpyError> {
    let io = |source| NpyError::Io { path: path.to_path_buf(), source };
    let format = |what: String| NpyError::Format { path: path.to_path_buf(), what };
    let (file, file_len) = files::open_regular(path).map_err(io)?;
    let mut r = std::io::BufReader::with_capacity(1 << 16, file);
    // Magic, version and a 2-byte header length (version 1), or 2 more bytes (versions 2 and 3).
    let mut head = [0u8; 12];
    let mut got = read_up_to(&mut r, &mut head[..10]).map_err(io)?;
    if got == 10 && matches!(head[6], 2 | 3) {
        got += read_up_to(&mut r, &mut head[10..]).map_err(io)?;
    }
    let (start, len) = prefix(&head[..got]).map_err(format)?;
    let end = start + len;
    if file_len < end as u64 {
        return Err(format(format!("truncated header: it claims {len} bytes")));
    }
    let mut header = vec![0u8; len];
    r.read_exact(&mut header).map_err(io)?;
    let descr = header_descr(&header).map_err(format)?;
    Ok((descr, Opened { r, file_len, header, end }))
}

/// Reads a C-order `.npy` file of `T` whose data fits `budget`. Only regular files are opened (a
/// FIFO or `/dev/zero` is an error, not a hang); the header is read and checked first, the data
/// size it declares is compared with the file's length before any data is read, and exactly that
/// much is read (one more byte read proves nothing follows). The array is allocated fallibly.
pub fn read_typed_within<T: Element>(path: &Path, budget: MemoryBudget) -> Result<Array<T>, NpyError> {
    let io = |source| NpyError::Io { path: path.to_path_buf(), source };
    let format = |what: String| NpyError::Format { path: path.to_path_buf(), what };
    let (_, Opened { mut r, file_len, header, end }) = open_header(path)?;
    let (shape, count, need) = describe::<T>(&header).map_err(format)?;
    let data_len = file_len - end as u64;
    if data_len != need as u64 {
        return Err(format(size_mismatch(&shape, need, data_len)));
    }
    let what = format!("its data ({shape:?} {})", T::NAME);
    budget.check(&what, count, T::SIZE).map_err(|e| format(e.to_string()))?;
    let mut data = Vec::new();
    data.try_reserve_exact(count).map_err(|_| format(format!("cannot allocate {need} bytes for the data")))?;
    let mut chunk = vec![0u8; (1 << 16).min(need.max(T::SIZE))];
    let mut left = need;
    while left > 0 {
        let n = left.min(chunk.len());
        r.read_exact(&mut chunk[..n]).map_err(io)?;
        data.extend(chunk[..n].chunks_exact(T::SIZE).map(T::from_le));
        left -= n;
    }
    if r.read(&mut [0u8]).map_err(io)? != 0 {
        return Err(format("the file grew while it was read".into()));
    }
    Ok(Array { shape, data })
}

/// Reads until `buf` is full or the end of the file; returns how many bytes were read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The `.npy` bytes of an f32 array in C order.
pub fn to_bytes(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + 4 * data.len());
    // Writing into a Vec cannot fail.
    let _ = write_to(&mut out, shape, data);
    out
}

/// Streams an array as `.npy` into `w` (no second copy of the data).
fn write_to<T: Element>(w: &mut dyn Write, shape: &[usize], data: &[T]) -> std::io::Result<()> {
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    use npyz::WriterBuilder as _;
    let mut npy = npyz::WriteOptions::new().default_dtype().shape(&shape).writer(w).begin_nd()?;
    npy.extend(data.iter().copied())?;
    npy.finish()
}

/// Writes an array atomically ([`files::write_atomic`]): the file at `path` is either the
/// complete new array or untouched. The data is streamed to the file, not copied first.
pub fn write<T: Element>(path: &Path, shape: &[usize], data: &[T]) -> Result<(), NpyError> {
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if count != Some(data.len()) {
        let what = format!("shape {shape:?} does not hold the {} values given", data.len());
        return Err(NpyError::Format { path: path.to_path_buf(), what });
    }
    files::write_atomic(path, |w| write_to(w, shape, data))
        .map_err(|source| NpyError::Io { path: path.to_path_buf(), source })
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
