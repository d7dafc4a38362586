//! The byte codec every on-disk format is written and read with.
//!
//! * [`ByteWriter`] builds a file's bytes: little-endian integers and floats,
//!   raw bytes, and fields patched in after the fact (lengths, checksums).
//! * [`ByteReader`] reads them back and turns every read past the end into
//!   [`Error::Corruption`] naming the file and the byte offset where the read
//!   started, with what was being read. A reader knows where its buffer starts in
//!   the file (a record, a payload), so offsets are always file offsets.
//! * [`crc32`] is the one checksum of the project (CRC-32C, Castagnoli);
//!   [`check_crc32`] compares a stored value and reports a mismatch at its offset.
//!   [`crc32_ieee_legacy`] exists only to read files of format versions written
//!   before the switch to CRC-32C.
//! * [`metric_code`] / [`metric_from_code`]: the one-byte metric code the binary
//!   formats share.
//!
//! All integers are little-endian; floats are IEEE-754, little-endian.

use crate::error::{Error, Result};
use crate::metric::Metric;
use std::borrow::Cow;
use std::path::Path;

/// CRC-32C (Castagnoli) of `bytes`: the checksum of every Omen format.
#[inline]
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// Continues the CRC-32C `crc` (of the bytes before) over `bytes`:
/// `crc32_append(crc32(a), b) == crc32(a ++ b)`.
#[inline]
pub fn crc32_append(crc: u32, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, bytes)
}

/// CRC-32 with the IEEE polynomial (zlib's): the checksum of the HNSW, IVF-PQ and
/// snapshot formats before their version 2. Only for reading such files; nothing
/// is written with it.
#[inline]
pub fn crc32_ieee_legacy(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Compares a stored checksum with the one computed over the data it covers:
/// a mismatch is `Corruption` in `file` at `offset` (where the stored value is).
pub fn check_checksum(
    stored: u32,
    computed: u32,
    file: &Path,
    offset: u64,
    what: &str,
) -> Result<()> {
    if stored == computed {
        return Ok(());
    }
    Err(Error::corruption(
        file,
        offset,
        format!("{what} checksum mismatch (stored {stored:08x}, computed {computed:08x})"),
    ))
}

/// [`check_checksum`] against the [`crc32`] of `data`.
pub fn check_crc32(stored: u32, data: &[u8], file: &Path, offset: u64, what: &str) -> Result<()> {
    check_checksum(stored, crc32(data), file, offset, what)
}

/// The metric's one-byte code in the binary formats: 0 = L2, 1 = inner product,
/// 2 = cosine.
pub fn metric_code(m: Metric) -> u8 {
    match m {
        Metric::L2 => 0,
        Metric::InnerProduct => 1,
        Metric::Cosine => 2,
    }
}

/// The metric of a [`metric_code`], or `None` for an unknown code.
pub fn metric_from_code(code: u8) -> Option<Metric> {
    match code {
        0 => Some(Metric::L2),
        1 => Some(Metric::InnerProduct),
        2 => Some(Metric::Cosine),
        _ => None,
    }
}

/// Builds a file's bytes, little-endian.
#[derive(Clone, Debug, Default)]
pub struct ByteWriter {
    buf: Vec<u8>,
}

impl ByteWriter {
    /// An empty writer.
    pub fn new() -> ByteWriter {
        ByteWriter::default()
    }

    /// An empty writer with room for `n` bytes.
    pub fn with_capacity(n: usize) -> ByteWriter {
        ByteWriter {
            buf: Vec::with_capacity(n),
        }
    }

    /// A writer that appends to `buf` (its bytes are kept; positions count from
    /// its start).
    pub fn from_vec(buf: Vec<u8>) -> ByteWriter {
        ByteWriter { buf }
    }

    /// The bytes written.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// Forgets what was written, keeping the allocation.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Bytes written so far: the position of the next byte.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Appends a byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// Appends a `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends a `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends a `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends an `f32`.
    pub fn f32(&mut self, v: f32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends an `f64`.
    pub fn f64(&mut self, v: f64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    /// Appends `n` zero bytes.
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.buf.resize(self.buf.len() + n, 0);
        self
    }

    /// Appends every `u32` of `v`.
    pub fn u32s(&mut self, v: &[u32]) -> &mut Self {
        self.buf.reserve(4 * v.len());
        for x in v {
            self.buf.extend_from_slice(&x.to_le_bytes());
        }
        self
    }

    /// Appends every `u64` of `v`.
    pub fn u64s(&mut self, v: &[u64]) -> &mut Self {
        self.buf.reserve(8 * v.len());
        for x in v {
            self.buf.extend_from_slice(&x.to_le_bytes());
        }
        self
    }

    /// Appends every `f32` of `v`.
    pub fn f32s(&mut self, v: &[f32]) -> &mut Self {
        #[cfg(target_endian = "little")]
        {
            // SAFETY: an initialised `[f32]` viewed as bytes: same memory, alignment
            // 1, every byte initialised; on a little-endian target these are the
            // little-endian encodings.
            let bytes = unsafe {
                std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v))
            };
            self.buf.extend_from_slice(bytes);
        }
        #[cfg(not(target_endian = "little"))]
        {
            self.buf.reserve(4 * v.len());
            for x in v {
                self.buf.extend_from_slice(&x.to_le_bytes());
            }
        }
        self
    }

    /// Appends `s` as a `u16` byte length and its UTF-8 bytes. The caller checked
    /// that the length fits.
    pub fn str_u16(&mut self, s: &str) -> &mut Self {
        debug_assert!(s.len() <= u16::MAX as usize);
        self.u16(s.len() as u16).bytes(s.as_bytes())
    }

    /// Appends `s` as a `u32` byte length and its UTF-8 bytes. The caller checked
    /// that the length fits.
    pub fn str_u32(&mut self, s: &str) -> &mut Self {
        debug_assert!(s.len() <= u32::MAX as usize);
        self.u32(s.len() as u32).bytes(s.as_bytes())
    }

    /// Overwrites the 4 bytes at `at` (already written) with `v`.
    ///
    /// # Panics
    /// If `at + 4` is past what was written: a bug in the writer, not an input.
    pub fn set_u32(&mut self, at: usize, v: u32) -> &mut Self {
        self.buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
        self
    }

    /// Overwrites the 8 bytes at `at` (already written) with `v`.
    ///
    /// # Panics
    /// If `at + 8` is past what was written: a bug in the writer, not an input.
    pub fn set_u64(&mut self, at: usize, v: u64) -> &mut Self {
        self.buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
        self
    }

    /// The [`crc32`] of the bytes written from `from` on.
    ///
    /// # Panics
    /// If `from` is past what was written: a bug in the writer, not an input.
    pub fn crc32_from(&self, from: usize) -> u32 {
        crc32(&self.buf[from..])
    }
}

/// Reads a file's bytes (or a part of them), little-endian. Every read past the
/// end is [`Error::Corruption`] naming the file and the offset where the read
/// started; the position does not move on an error.
#[derive(Clone, Debug)]
pub struct ByteReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// The file offset of `bytes[0]`.
    base: u64,
    file: &'a Path,
}

impl<'a> ByteReader<'a> {
    /// A reader over a whole file's bytes.
    pub fn new(bytes: &'a [u8], file: &'a Path) -> ByteReader<'a> {
        ByteReader::at(bytes, file, 0)
    }

    /// A reader over bytes that start at offset `base` of `file` (a record, a
    /// payload): errors report `base +` the position.
    pub fn at(bytes: &'a [u8], file: &'a Path, base: u64) -> ByteReader<'a> {
        ByteReader {
            bytes,
            pos: 0,
            base,
            file,
        }
    }

    /// The file errors name.
    pub fn file(&self) -> &'a Path {
        self.file
    }

    /// Bytes consumed: the index of the next byte in the buffer.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The file offset of the next byte.
    pub fn offset(&self) -> u64 {
        self.offset_of(self.pos)
    }

    /// The file offset of buffer index `pos`.
    pub fn offset_of(&self, pos: usize) -> u64 {
        self.base.saturating_add(pos as u64)
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.pos == self.bytes.len()
    }

    /// The whole buffer, read or not.
    pub fn buffer(&self) -> &'a [u8] {
        self.bytes
    }

    /// `Corruption` at the next byte's offset.
    pub fn error(&self, detail: impl Into<String>) -> Error {
        Error::corruption(self.file, self.offset(), detail)
    }

    /// `Corruption` at buffer index `pos`.
    pub fn error_at(&self, pos: usize, detail: impl Into<String>) -> Error {
        Error::corruption(self.file, self.offset_of(pos), detail)
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.bytes.len() => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            _ => Err(self.error(format!(
                "truncated: {what} needs {n} bytes, {} left",
                self.remaining()
            ))),
        }
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize, what: &str) -> Result<()> {
        self.bytes(n, what).map(|_| ())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let b = self.bytes(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    /// A byte.
    pub fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A `u16`.
    pub fn u16(&mut self, what: &str) -> Result<u16> {
        self.array(what).map(u16::from_le_bytes)
    }

    /// A `u32`.
    pub fn u32(&mut self, what: &str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    /// A `u64`.
    pub fn u64(&mut self, what: &str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// An `f32`.
    pub fn f32(&mut self, what: &str) -> Result<f32> {
        self.array(what).map(f32::from_le_bytes)
    }

    /// An `f64`.
    pub fn f64(&mut self, what: &str) -> Result<f64> {
        self.array(what).map(f64::from_le_bytes)
    }

    /// The magic number `magic`; anything else is "bad magic: not {what}" at the
    /// magic's offset.
    pub fn expect_magic(&mut self, magic: &[u8], what: &str) -> Result<()> {
        let at = self.pos;
        if self.bytes(magic.len(), "magic")? != magic {
            return Err(self.error_at(at, format!("bad magic: not {what}")));
        }
        Ok(())
    }

    /// A flags byte whose bit `i` is `known[i]` (at most 8); a set bit past those
    /// is an error at the byte's offset naming the known ones, so that a file
    /// from a later version, or damage, is refused rather than misread.
    pub fn flags(&mut self, what: &str, known: &[&str]) -> Result<u8> {
        let at = self.pos;
        let b = self.u8(what)?;
        let mask = u8::try_from((1u16 << known.len().min(8)) - 1).unwrap_or(u8::MAX);
        if b & !mask != 0 {
            let names: Vec<String> = known
                .iter()
                .enumerate()
                .map(|(i, n)| format!("{n} ({})", 1u16 << i))
                .collect();
            return Err(self.error_at(
                at,
                format!(
                    "{what} byte {b:#04x} has bits other than {}",
                    names.join(", ")
                ),
            ));
        }
        Ok(b)
    }

    /// `n` bytes that must be zero (reserved fields, padding); the error names the
    /// offset of the first non-zero one.
    pub fn zeros(&mut self, n: usize, what: &str) -> Result<()> {
        let at = self.pos;
        let b = self.bytes(n, what)?;
        match b.iter().position(|&x| x != 0) {
            None => Ok(()),
            Some(i) => Err(self.error_at(at + i, format!("{what} is not zero"))),
        }
    }

    /// `n` `u32`s.
    pub fn u32s(&mut self, n: usize, what: &str) -> Result<Vec<u32>> {
        let b = self.bytes(n.saturating_mul(4), what)?;
        Ok(b.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// `n` `u64`s.
    pub fn u64s(&mut self, n: usize, what: &str) -> Result<Vec<u64>> {
        let b = self.bytes(n.saturating_mul(8), what)?;
        Ok(b.chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                u64::from_le_bytes(a)
            })
            .collect())
    }

    /// `n` `f32`s: borrowed from the buffer when it is aligned for `f32` on a
    /// little-endian target, decoded otherwise.
    pub fn f32s(&mut self, n: usize, what: &str) -> Result<Cow<'a, [f32]>> {
        let b = self.bytes(n.saturating_mul(4), what)?;
        Ok(f32s_le(b))
    }

    /// `n` `f32`s that must all be finite: a NaN or infinity is `Corruption` at its
    /// own offset.
    pub fn finite_f32s(&mut self, n: usize, what: &str) -> Result<Cow<'a, [f32]>> {
        let at = self.pos;
        let v = self.f32s(n, what)?;
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(self.error_at(at + 4 * i, format!("non-finite {what} component {i}")));
        }
        Ok(v)
    }

    /// `n` bytes of UTF-8.
    pub fn utf8(&mut self, n: usize, what: &str) -> Result<&'a str> {
        let at = self.pos;
        let b = self.bytes(n, what)?;
        std::str::from_utf8(b).map_err(|e| self.error_at(at, format!("{what} is not UTF-8: {e}")))
    }

    /// A `u64` count of items of at least `min_item_bytes` bytes each, refused
    /// when the bytes left cannot hold that many (so nothing is ever allocated for
    /// an unchecked count).
    pub fn count_u64(&mut self, min_item_bytes: usize, what: &str) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        self.check_count(at, n, min_item_bytes, what)
    }

    /// [`count_u64`](Self::count_u64) for a `u32` count.
    pub fn count_u32(&mut self, min_item_bytes: usize, what: &str) -> Result<usize> {
        let at = self.pos;
        let n = self.u32(what)?;
        self.check_count(at, u64::from(n), min_item_bytes, what)
    }

    fn check_count(&self, at: usize, n: u64, item: usize, what: &str) -> Result<usize> {
        let room = self.remaining() / item.max(1);
        if n > room as u64 {
            return Err(self.error_at(
                at,
                format!(
                    "{what} = {n} cannot fit in the {} bytes left",
                    self.remaining()
                ),
            ));
        }
        Ok(n as usize)
    }

    /// Fails unless every byte was read: "N trailing bytes after {what}" at the
    /// first unread byte.
    pub fn expect_end(&self, what: &str) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        Err(self.error(format!("{} trailing bytes after {what}", self.remaining())))
    }
}

/// Little-endian `f32` bytes as floats: borrowed without copying on a
/// little-endian target when `data` is 4-aligned, decoded otherwise. A trailing
/// partial float is ignored.
pub fn f32s_le(data: &[u8]) -> Cow<'_, [f32]> {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: every bit pattern is a valid f32, and `align_to` only yields a
        // middle slice of correctly aligned, in-bounds f32s; on a little-endian
        // target their bytes are the little-endian encodings.
        let (head, mid, tail) = unsafe { data.align_to::<f32>() };
        if head.is_empty() && tail.is_empty() {
            return Cow::Borrowed(mid);
        }
    }
    Cow::Owned(
        data.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corruption(e: Error) -> (std::path::PathBuf, u64, String) {
        match e {
            Error::Corruption {
                file,
                offset,
                detail,
            } => (file, offset, detail),
            other => panic!("not corruption: {other}"),
        }
    }

    #[test]
    fn flags_refuse_unknown_bits_at_their_offset() {
        let file = Path::new("f.bin");
        let bytes = [0u8, 0b11, 0b100, 0xff];
        let mut r = ByteReader::new(&bytes, file);
        assert_eq!(r.flags("none", &[]).unwrap(), 0);
        assert_eq!(r.flags("flags", &["a", "b"]).unwrap(), 3);
        let (f, offset, detail) = corruption(r.flags("flags", &["a", "b"]).unwrap_err());
        assert_eq!((f.as_path(), offset), (file, 2));
        assert_eq!(detail, "flags byte 0x04 has bits other than a (1), b (2)");
        let every = ["0", "1", "2", "3", "4", "5", "6", "7"];
        assert_eq!(r.flags("flags", &every).unwrap(), 0xff);
        assert!(r.flags("flags", &every).is_err(), "past the end");
    }

    #[test]
    fn writer_and_reader_round_trip() {
        let mut w = ByteWriter::new();
        w.bytes(b"MAGC")
            .u8(7)
            .u16(0x1234)
            .u32(0xdead_beef)
            .u64(u64::MAX - 1)
            .f32(1.5)
            .f64(-2.25)
            .f32s(&[1.0, -0.0, 3.5])
            .u32s(&[9, 10])
            .u64s(&[11])
            .str_u16("héllo")
            .zeros(3);
        let at = w.len();
        w.u32(0).set_u32(at, 77);
        let bytes = w.finish();
        let file = Path::new("x.bin");
        let mut r = ByteReader::new(&bytes, file);
        r.expect_magic(b"MAGC", "a test file").unwrap();
        assert_eq!(r.u8("a").unwrap(), 7);
        assert_eq!(r.u16("b").unwrap(), 0x1234);
        assert_eq!(r.u32("c").unwrap(), 0xdead_beef);
        assert_eq!(r.u64("d").unwrap(), u64::MAX - 1);
        assert_eq!(r.f32("e").unwrap(), 1.5);
        assert_eq!(r.f64("f").unwrap(), -2.25);
        assert_eq!(&*r.finite_f32s(3, "g").unwrap(), &[1.0, -0.0, 3.5]);
        assert_eq!(r.u32s(2, "h").unwrap(), vec![9, 10]);
        assert_eq!(r.u64s(1, "i").unwrap(), vec![11]);
        let n = r.u16("len").unwrap() as usize;
        assert_eq!(r.utf8(n, "s").unwrap(), "héllo");
        r.zeros(3, "pad").unwrap();
        assert_eq!(r.u32("patched").unwrap(), 77);
        assert_eq!(r.remaining(), 0);
        r.expect_end("the test fields").unwrap();
    }

    #[test]
    fn reads_past_the_end_name_the_file_and_the_start_offset() {
        let bytes = [1u8, 2, 3, 4, 5, 6];
        let file = Path::new("dir/f.bin");
        let mut r = ByteReader::at(&bytes, file, 100);
        assert_eq!(r.u16("x").unwrap(), 0x0201);
        // A u64 at buffer index 2 (file offset 102) with 4 bytes left.
        let (f, off, detail) = corruption(r.u64("entry count").unwrap_err());
        assert_eq!(f, file);
        assert_eq!(off, 102);
        assert!(detail.contains("entry count"), "{detail}");
        assert!(detail.contains("needs 8 bytes, 4 left"), "{detail}");
        // The failed read did not move the position.
        assert_eq!(r.position(), 2);
        assert_eq!(r.offset(), 102);
        assert_eq!(r.u32("y").unwrap(), 0x0605_0403);
        for e in [
            r.u8("a").unwrap_err(),
            r.u32("b").unwrap_err(),
            r.f32("c").unwrap_err(),
            r.bytes(1, "d").unwrap_err(),
            r.skip(1, "e").unwrap_err(),
            r.f32s(1, "f").unwrap_err(),
            r.u32s(1, "g").unwrap_err(),
            r.utf8(1, "h").unwrap_err(),
        ] {
            assert_eq!(corruption(e).1, 106);
        }
        // Zero-length reads at the end succeed.
        assert!(r.bytes(0, "nothing").unwrap().is_empty());
        // A huge count does not overflow.
        let mut r = ByteReader::new(&bytes, file);
        assert_eq!(corruption(r.f32s(usize::MAX, "big").unwrap_err()).1, 0);
        assert_eq!(corruption(r.bytes(usize::MAX, "big").unwrap_err()).1, 0);
    }

    #[test]
    fn content_errors_name_their_own_offset() {
        let file = Path::new("f");
        let mut w = ByteWriter::new();
        w.bytes(b"OMENTEST")
            .u8(0)
            .u8(0)
            .u8(9)
            .f32(1.0)
            .f32(f32::NAN)
            .bytes(&[0xff, 0xfe]);
        let bytes = w.finish();
        let mut r = ByteReader::at(&bytes, file, 1000);
        let e = r.clone().expect_magic(b"OMENXXXX", "an omen thing");
        let (_, off, detail) = corruption(e.unwrap_err());
        assert_eq!(
            (off, detail.as_str()),
            (1000, "bad magic: not an omen thing")
        );
        r.skip(8, "magic").unwrap();
        assert_eq!(
            corruption(r.clone().zeros(3, "reserved").unwrap_err()).1,
            1010
        );
        r.skip(3, "reserved").unwrap();
        let (_, off, detail) = corruption(r.clone().finite_f32s(2, "vector").unwrap_err());
        assert_eq!(off, 1015);
        assert!(detail.contains("non-finite vector component 1"), "{detail}");
        r.skip(8, "floats").unwrap();
        assert_eq!(corruption(r.clone().utf8(2, "id").unwrap_err()).1, 1019);
        let (_, off, detail) = corruption(r.expect_end("the floats").unwrap_err());
        assert_eq!(off, 1019);
        assert!(detail.starts_with("2 trailing bytes"), "{detail}");
    }

    #[test]
    fn counts_that_cannot_fit_are_refused_at_the_count() {
        let file = Path::new("f");
        let mut w = ByteWriter::new();
        w.u64(3).zeros(12);
        let bytes = w.finish();
        assert_eq!(ByteReader::new(&bytes, file).count_u64(4, "n").unwrap(), 3);
        let e = ByteReader::new(&bytes, file).count_u64(5, "n").unwrap_err();
        assert_eq!(corruption(e).1, 0);
        let mut w = ByteWriter::new();
        w.u32(1).u32(u32::MAX);
        let bytes = w.finish();
        let mut r = ByteReader::at(&bytes, file, 8);
        assert_eq!(r.count_u32(4, "a").unwrap(), 1);
        assert_eq!(corruption(r.count_u32(1, "b").unwrap_err()).1, 12);
    }

    #[test]
    fn checksums() {
        // The CRC-32C check value.
        assert_eq!(crc32(b"123456789"), 0xe306_9283);
        assert_eq!(crc32_append(crc32(b"1234"), b"56789"), crc32(b"123456789"));
        // The CRC-32/IEEE check value.
        assert_eq!(crc32_ieee_legacy(b"123456789"), 0xcbf4_3926);
        let file = Path::new("f");
        check_crc32(0xe306_9283, b"123456789", file, 40, "header").unwrap();
        let (_, off, detail) =
            corruption(check_crc32(1, b"123456789", file, 40, "header").unwrap_err());
        assert_eq!(off, 40);
        assert!(detail.starts_with("header checksum mismatch"), "{detail}");
    }

    #[test]
    fn metric_codes_round_trip_and_match_the_formats() {
        for (m, c) in [
            (Metric::L2, 0),
            (Metric::InnerProduct, 1),
            (Metric::Cosine, 2),
        ] {
            assert_eq!(metric_code(m), c);
            assert_eq!(metric_from_code(c), Some(m));
        }
        assert_eq!(metric_from_code(3), None);
    }

    #[test]
    fn unaligned_floats_are_decoded() {
        let mut w = ByteWriter::new();
        w.u8(0).f32s(&[1.0, 2.0]);
        let b = w.finish();
        let mut r = ByteReader::new(&b, Path::new("f"));
        r.skip(1, "pad").unwrap();
        assert_eq!(&*r.f32s(2, "v").unwrap(), &[1.0, 2.0]);
    }
}
