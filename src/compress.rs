//! Chunk compression. zstd when it pays, raw when it does not: media and already-compressed data are
//! detected from a small sample, so incompressible chunks cost almost no CPU.

use crate::error::{Error, Result};

/// How a payload is stored in a pack record. The numbers are part of the on-disk format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Stored as is.
    None = 0,
    /// A single zstd frame.
    Zstd = 1,
}

impl Compression {
    /// Parses the on-disk byte; unknown values are corruption, not a default.
    pub fn from_byte(b: u8) -> Option<Compression> {
        match b {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Size of the sample compressed first to decide whether the whole chunk is worth compressing.
const SAMPLE: usize = 16 * 1024;

/// Compresses `data` at `level`, or returns `None` when the result would not save at least 3%
/// (the caller then stores the plaintext).
pub fn compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    if level == 0 || data.len() < 64 {
        return None;
    }
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if data.len() > 4 * SAMPLE {
            // Sample the middle of the chunk: headers are often more compressible than bodies.
            let start = data.len() / 2 - SAMPLE / 2;
            c.set_compression_level(1).ok()?;
            let sample = c.compress(&data[start..start + SAMPLE]).ok()?;
            if sample.len() * 100 > SAMPLE * 97 {
                return None;
            }
        }
        c.set_compression_level(level).ok()?;
        let out = c.compress(data).ok()?;
        (out.len() * 100 <= data.len() * 97).then_some(out)
    })
}

thread_local! {
    // One zstd context per thread, reused: creating a context per chunk costs more than
    // compressing a small chunk.
    static COMPRESSOR: std::cell::RefCell<zstd::bulk::Compressor<'static>> =
        std::cell::RefCell::new(zstd::bulk::Compressor::new(1).expect("zstd context"));
    static DECOMPRESSOR: std::cell::RefCell<zstd::bulk::Decompressor<'static>> =
        std::cell::RefCell::new(zstd::bulk::Decompressor::new().expect("zstd context"));
}

/// Inverse of [`compress`]; `raw_len` comes from the record header and bounds the allocation.
pub fn decompress(data: &[u8], raw_len: usize) -> Result<Vec<u8>> {
    let out = DECOMPRESSOR
        .with(|d| d.borrow_mut().decompress(data, raw_len))
        .map_err(|e| Error::CorruptMetadata(format!("zstd frame does not decode: {e}")))?;
    if out.len() != raw_len {
        return Err(Error::CorruptMetadata(format!(
            "zstd frame decodes to {} bytes, header says {raw_len}",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_round_trip() {
        let data = b"order 12345 shipped to Berlin\n".repeat(5000);
        let c = compress(&data, 3).expect("text compresses");
        assert!(c.len() < data.len() / 10);
        assert_eq!(decompress(&c, data.len()).unwrap(), data);
    }

    #[test]
    fn random_stays_raw() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let data: Vec<u8> = (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(compress(&data, 3).is_none());
    }

    #[test]
    fn wrong_length_is_an_error() {
        let data = vec![7u8; 10_000];
        let c = compress(&data, 3).unwrap();
        assert!(decompress(&c, 9_999).is_err());
    }
}
