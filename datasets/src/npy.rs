//! NumPy `.npy` files holding a 2-D little-endian `float32` array in C order.
//!
//! Layout: the magic `\x93NUMPY`, a major and minor version byte, the header length
//! (`u16` for version 1.0, `u32` for 2.0 and 3.0, little-endian), then the header: a
//! Python dict literal such as `{'descr': '<f4', 'fortran_order': False, 'shape':
//! (400000, 50), }` padded with spaces to a multiple of 64 bytes, then the data.
//! Version 3.0 differs from 2.0 only in allowing UTF-8 in the header.

use crate::io::{check_dim, decode_into, read_file, write_file, MAX_DIM};
use crate::matrix::{Matrix, Vectors};
use omen_core::{Error, Result};
use std::path::Path;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The `.npy` format version to write.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NpyVersion {
    /// 1.0: 16-bit header length (what NumPy writes for small headers).
    #[default]
    V1,
    /// 2.0: 32-bit header length.
    V2,
    /// 3.0: as 2.0, with a UTF-8 header.
    V3,
}

/// Which memory orders [`parse_npy_with`] accepts.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NpyOrder {
    /// Only C order (row-major), the layout of every other reader; Fortran order is
    /// `Corruption`.
    #[default]
    COnly,
    /// C order, or Fortran order (column-major), which is transposed on read. The
    /// GloVe wheel's array is Fortran-ordered.
    AllowFortran,
}

#[derive(Debug, PartialEq)]
enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<u64>),
}

/// A parser for the tiny subset of Python literals that `.npy` headers use.
struct HeaderParser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> HeaderParser<'a> {
    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        if self.s.get(self.pos) == Some(&c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!(
                "expected {:?} at header byte {}",
                c as char, self.pos
            ))
        }
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        self.skip_ws();
        let q = match self.s.get(self.pos) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => {
                return Err(format!(
                    "expected a quoted string at header byte {}",
                    self.pos
                ))
            }
        };
        let start = self.pos + 1;
        let len = self.s[start..]
            .iter()
            .position(|&c| c == q)
            .ok_or_else(|| "unterminated string in header".to_string())?;
        self.pos = start + len + 1;
        String::from_utf8(self.s[start..start + len].to_vec())
            .map_err(|_| "header string is not UTF-8".to_string())
    }

    fn value(&mut self) -> std::result::Result<Value, String> {
        self.skip_ws();
        let rest = &self.s[self.pos..];
        if rest.starts_with(b"True") {
            self.pos += 4;
            return Ok(Value::Bool(true));
        }
        if rest.starts_with(b"False") {
            self.pos += 5;
            return Ok(Value::Bool(false));
        }
        if self.eat(b'(') {
            let mut items = Vec::new();
            loop {
                if self.eat(b')') {
                    return Ok(Value::Tuple(items));
                }
                self.skip_ws();
                let start = self.pos;
                while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
                    self.pos += 1;
                }
                let digits = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
                let n: u64 = digits
                    .parse()
                    .map_err(|_| format!("expected a dimension at header byte {start}"))?;
                // Python 2 wrote long integers with an `L` suffix.
                self.eat(b'L');
                items.push(n);
                if !self.eat(b',') {
                    self.expect(b')')?;
                    return Ok(Value::Tuple(items));
                }
            }
        }
        self.string().map(Value::Str)
    }

    fn dict(&mut self) -> std::result::Result<Vec<(String, Value)>, String> {
        self.expect(b'{')?;
        let mut out = Vec::new();
        loop {
            if self.eat(b'}') {
                return Ok(out);
            }
            let key = self.string()?;
            self.expect(b':')?;
            let v = self.value()?;
            if out.iter().any(|(k, _)| *k == key) {
                return Err(format!("key {key:?} appears twice"));
            }
            out.push((key, v));
            if !self.eat(b',') {
                self.expect(b'}')?;
                return Ok(out);
            }
        }
    }
}

/// Parses `.npy` bytes holding a 2-D `<f4` array in C order. `file` names the
/// source in errors.
///
/// Errors: `Corruption` with the byte offset for a bad magic, an unknown version, a
/// truncated or malformed header, a dtype other than little-endian float32, a
/// Fortran-ordered array, a shape that is not 2-D, a dimension outside
/// `1..=MAX_DIM`, a data size that does not match the shape (checked before
/// anything is allocated), or a NaN/infinite value.
pub fn parse_npy(bytes: &[u8], file: impl AsRef<Path>) -> Result<Vectors> {
    parse_npy_with(bytes, file, NpyOrder::COnly)
}

/// As [`parse_npy`], accepting the memory orders `order` allows; a Fortran-ordered
/// array is transposed into rows.
pub fn parse_npy_with(bytes: &[u8], file: impl AsRef<Path>, order: NpyOrder) -> Result<Vectors> {
    let file = file.as_ref();
    let corrupt = |off: usize, d: String| Error::corruption(file, off as u64, d);
    if bytes.len() < 8 || &bytes[..6] != MAGIC {
        return Err(corrupt(0, "not a .npy file: bad magic".into()));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_start, header_len): (usize, usize) = match major {
        1 => match bytes.get(8..10) {
            Some(b) => (10, usize::from(u16::from_le_bytes([b[0], b[1]]))),
            None => return Err(corrupt(8, "truncated: no header length".into())),
        },
        2 | 3 => match bytes.get(8..12) {
            Some(b) => (12, u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize),
            None => return Err(corrupt(8, "truncated: no header length".into())),
        },
        _ => {
            return Err(corrupt(
                6,
                format!("unsupported .npy version {major}.{minor} (1.0, 2.0 and 3.0 are)"),
            ))
        }
    };
    let data_start = header_start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            corrupt(
                8,
                format!(
                    "truncated: header length {header_len} runs past the end of the file ({} bytes)",
                    bytes.len()
                ),
            )
        })?;
    let header = &bytes[header_start..data_start];
    if major == 1 || major == 2 {
        // Versions 1.0 and 2.0 promise a latin-1 header; NumPy writes ASCII.
        if !header.is_ascii() {
            return Err(corrupt(header_start, "non-ASCII header".into()));
        }
    }
    let fields = HeaderParser { s: header, pos: 0 }
        .dict()
        .map_err(|e| corrupt(header_start, format!("malformed header: {e}")))?;
    let get = |k: &str| fields.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    match get("descr") {
        Some(Value::Str(d)) if d == "<f4" => {}
        Some(Value::Str(d)) if d == ">f4" => {
            return Err(corrupt(
                header_start,
                "big-endian float32 ('>f4') is not supported; save as '<f4'".into(),
            ))
        }
        Some(Value::Str(d)) => {
            return Err(corrupt(
                header_start,
                format!("dtype {d:?} is not supported: only little-endian float32 ('<f4') is"),
            ))
        }
        _ => return Err(corrupt(header_start, "header has no 'descr' string".into())),
    }
    let fortran = match get("fortran_order") {
        Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) if order == NpyOrder::AllowFortran => true,
        Some(Value::Bool(true)) => {
            return Err(corrupt(
                header_start,
                "Fortran-ordered (column-major) arrays are not supported; save in C order \
                 (numpy.ascontiguousarray)"
                    .into(),
            ))
        }
        _ => {
            return Err(corrupt(
                header_start,
                "header has no boolean 'fortran_order'".into(),
            ))
        }
    };
    let (rows, dim) = match get("shape") {
        Some(Value::Tuple(s)) if s.len() == 2 => (s[0], s[1]),
        Some(Value::Tuple(s)) => {
            return Err(corrupt(
                header_start,
                format!(
                    "shape has {} dimensions; a 2-D (rows, dim) array is required",
                    s.len()
                ),
            ))
        }
        _ => return Err(corrupt(header_start, "header has no 'shape' tuple".into())),
    };
    let dim = check_dim(i64::try_from(dim).unwrap_or(i64::MAX), header_start, file)?;
    let avail = (bytes.len() - data_start) as u64;
    let row_bytes = 4 * dim as u64;
    let need = rows.saturating_mul(row_bytes);
    if avail < need {
        return Err(corrupt(
            data_start + ((avail / row_bytes) * row_bytes) as usize,
            format!(
                "truncated: shape ({rows}, {dim}) needs {need} data bytes, the file holds {avail}"
            ),
        ));
    }
    if avail > need {
        return Err(corrupt(
            data_start + need as usize,
            format!(
                "{} trailing bytes after the ({rows}, {dim}) array",
                avail - need
            ),
        ));
    }
    let rows = rows as usize;
    if fortran {
        return parse_fortran(&bytes[data_start..], data_start, rows, dim, file);
    }
    let mut data = Vec::with_capacity(rows * dim);
    decode_into(
        &bytes[data_start..],
        data_start as u64,
        &mut data,
        file,
        dim,
        0,
    )?;
    Ok(Matrix::from_parts(rows, dim, data))
}

/// Column-major data (component `c` of row `r` at index `c * rows + r`) into rows.
fn parse_fortran(
    data: &[u8],
    data_start: usize,
    rows: usize,
    dim: usize,
    file: &Path,
) -> Result<Vectors> {
    let cols: Vec<f32> = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if let Some(i) = cols.iter().position(|x| !x.is_finite()) {
        return Err(Error::corruption(
            file,
            (data_start + 4 * i) as u64,
            format!(
                "non-finite value at row {}, component {} (Fortran order)",
                i % rows.max(1),
                i / rows.max(1)
            ),
        ));
    }
    let mut out = vec![0.0f32; rows * dim];
    for (c, col) in cols.chunks_exact(rows.max(1)).enumerate().take(dim) {
        for (r, &x) in col.iter().enumerate() {
            out[r * dim + c] = x;
        }
    }
    Ok(Matrix::from_parts(rows, dim, out))
}

/// Encodes vectors as a `.npy` file of the given version (2-D `<f4`, C order).
/// Refuses non-finite values.
pub fn encode_npy(m: &Vectors, version: NpyVersion) -> Result<Vec<u8>> {
    crate::io::check_writable(m.data(), m.dim())?;
    debug_assert!(m.dim() <= MAX_DIM);
    let dict = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        m.rows(),
        m.dim()
    );
    let (major, len_bytes) = match version {
        NpyVersion::V1 => (1u8, 2usize),
        NpyVersion::V2 => (2, 4),
        NpyVersion::V3 => (3, 4),
    };
    let preamble = MAGIC.len() + 2 + len_bytes;
    // Pad with spaces and end with a newline so that the data starts 64-aligned.
    let unpadded = preamble + dict.len() + 1;
    let header_len = dict.len() + 1 + (64 - unpadded % 64) % 64;
    let mut out = Vec::with_capacity(preamble + header_len + 4 * m.data().len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[major, 0]);
    if len_bytes == 2 {
        let l = u16::try_from(header_len)
            .map_err(|_| Error::invalid_param("version", "header too long for .npy 1.0"))?;
        out.extend_from_slice(&l.to_le_bytes());
    } else {
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(preamble + header_len - 1, b' ');
    out.push(b'\n');
    for &v in m.data() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

/// Reads a `.npy` file.
pub fn read_npy(path: impl AsRef<Path>) -> Result<Vectors> {
    let path = path.as_ref();
    parse_npy(&read_file(path)?, path)
}

/// Writes a `.npy` file (version 1.0; atomically, through a temporary file).
pub fn write_npy(path: impl AsRef<Path>, m: &Vectors) -> Result<()> {
    write_file(path.as_ref(), &encode_npy(m, NpyVersion::V1)?)
}
