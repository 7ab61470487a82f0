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
    /// A single zstd frame compressed with the repository's dictionary (see [`Dictionary`]).
    ZstdDict = 2,
}

impl Compression {
    /// Parses the on-disk byte; unknown values are corruption, not a default.
    pub fn from_byte(b: u8) -> Option<Compression> {
        match b {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            2 => Some(Compression::ZstdDict),
            _ => None,
        }
    }
}

/// A zstd dictionary trained on a repository's small chunks. Small files (order documents) share
/// most of their structure but are compressed one by one for random access; a dictionary gives
/// zstd that shared structure, which makes them 2–3× smaller. One per repository, immutable.
pub struct Dictionary {
    /// blake3 of the dictionary bytes; its record id in the packs.
    pub id: crate::id::ChunkId,
    /// The trained dictionary.
    pub bytes: Vec<u8>,
}

/// Chunks up to this size are compressed with the dictionary when there is one.
pub const DICT_MAX_CHUNK: usize = 64 * 1024;

impl Dictionary {
    /// Trains a dictionary from sample contents; `None` when there are too few samples or
    /// training fails (then chunks are compressed without one).
    pub fn train(samples: &[Vec<u8>]) -> Option<Dictionary> {
        if samples.len() < 100 {
            return None;
        }
        let bytes = zstd::dict::from_samples(samples, 64 * 1024).ok()?;
        Some(Dictionary::from_bytes(bytes))
    }

    /// Wraps stored dictionary bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Dictionary {
        Dictionary {
            id: crate::id::ChunkId::of(&bytes),
            bytes,
        }
    }
}

/// Size of the sample compressed first to decide whether the whole chunk is worth compressing.
const SAMPLE: usize = 16 * 1024;

/// Compresses `data` at `level`, or returns `None` when the result would not save at least 3%
/// (the caller then stores the plaintext).
pub fn compress(
    data: &[u8],
    level: i32,
    dict: Option<&Dictionary>,
) -> Option<(Compression, Vec<u8>)> {
    if level == 0 || data.len() < 64 {
        return None;
    }
    if let Some(d) = dict.filter(|_| data.len() <= DICT_MAX_CHUNK) {
        let out = DICT_COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref()
                .is_none_or(|(id, l, _)| *id != d.id || *l != level)
            {
                let mut comp = zstd::bulk::Compressor::with_dictionary(level, &d.bytes).ok()?;
                comp.include_dictid(false).ok()?;
                *c = Some((d.id, level, comp));
            }
            c.as_mut().unwrap().2.compress(data).ok()
        })?;
        return (out.len() * 100 <= data.len() * 97).then_some((Compression::ZstdDict, out));
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
        (out.len() * 100 <= data.len() * 97).then_some((Compression::Zstd, out))
    })
}

thread_local! {
    // One zstd context per thread, reused: creating a context per chunk costs more than
    // compressing a small chunk.
    static COMPRESSOR: std::cell::RefCell<zstd::bulk::Compressor<'static>> =
        std::cell::RefCell::new(zstd::bulk::Compressor::new(1).expect("zstd context"));
    static DECOMPRESSOR: std::cell::RefCell<zstd::bulk::Decompressor<'static>> =
        std::cell::RefCell::new(zstd::bulk::Decompressor::new().expect("zstd context"));
    // Contexts with the dictionary loaded, keyed by dictionary id (and level).
    static DICT_COMPRESSOR: std::cell::RefCell<
        Option<(crate::id::ChunkId, i32, zstd::bulk::Compressor<'static>)>,
    > = const { std::cell::RefCell::new(None) };
    static DICT_DECOMPRESSOR: std::cell::RefCell<
        Option<(crate::id::ChunkId, zstd::bulk::Decompressor<'static>)>,
    > = const { std::cell::RefCell::new(None) };
}

/// Decompresses a payload stored with `compression`; `dict` is the repository's dictionary
/// (required for [`Compression::ZstdDict`]).
pub fn decode(
    data: &[u8],
    raw_len: usize,
    compression: Compression,
    dict: Option<&Dictionary>,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    decode_into(data, raw_len, compression, dict, &mut out)?;
    Ok(out)
}

/// [`decode`] appended to `out` (what it holds stays), so a reader can reuse buffers and decode
/// several chunks into one. Exactly `raw_len` bytes are appended, or an error (and then `out` is
/// back to its previous length).
pub fn decode_into(
    data: &[u8],
    raw_len: usize,
    compression: Compression,
    dict: Option<&Dictionary>,
    out: &mut Vec<u8>,
) -> Result<()> {
    let start = out.len();
    out.reserve_exact(raw_len);
    // Decoding through a cursor at the end appends into the spare capacity: no zero-fill first.
    fn tail(out: &mut Vec<u8>, start: usize) -> std::io::Cursor<&mut Vec<u8>> {
        let mut c = std::io::Cursor::new(out);
        c.set_position(start as u64);
        c
    }
    let res = match compression {
        Compression::None => {
            out.extend_from_slice(data);
            Ok(data.len())
        }
        Compression::Zstd => DECOMPRESSOR.with(|d| {
            d.borrow_mut()
                .decompress_to_buffer(data, &mut tail(out, start))
        }),
        Compression::ZstdDict => {
            let d = dict.ok_or_else(|| {
                Error::CorruptMetadata(
                    "chunk needs the repository's dictionary, which is missing".into(),
                )
            })?;
            DICT_DECOMPRESSOR.with(|c| {
                let mut c = c.borrow_mut();
                if c.as_ref().is_none_or(|(id, _)| *id != d.id) {
                    *c = Some((d.id, zstd::bulk::Decompressor::with_dictionary(&d.bytes)?));
                }
                c.as_mut()
                    .unwrap()
                    .1
                    .decompress_to_buffer(data, &mut tail(out, start))
            })
        }
    };
    let res = res
        .map_err(|e| Error::CorruptMetadata(format!("zstd frame does not decode: {e}")))
        .and_then(|_| {
            let got = out.len() - start;
            if got != raw_len {
                return Err(Error::CorruptMetadata(format!(
                    "payload decodes to {got} bytes, header says {raw_len}"
                )));
            }
            Ok(())
        });
    if res.is_err() {
        out.truncate(start);
    }
    res
}

/// Inverse of [`compress`] without a dictionary; `raw_len` comes from the record header and bounds
/// the allocation.
pub fn decompress(data: &[u8], raw_len: usize) -> Result<Vec<u8>> {
    decode(data, raw_len, Compression::Zstd, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_round_trip_and_gain() {
        let docs: Vec<Vec<u8>> = (0..400)
            .map(|i| {
                format!(
                    "{{\"order_id\": {i}, \"customer\": {{\"name\": \"Customer {}\", \"city\": \"Berlin\"}}, \"items\": [{{\"sku\": \"SKU-{}\", \"qty\": {}, \"price\": {}.99}}], \"status\": \"shipped\"}}",
                    i * 7919 % 1000,
                    i * 31 % 977,
                    i % 5 + 1,
                    i % 90
                )
                .into_bytes()
            })
            .collect();
        let dict = Dictionary::train(&docs[..300]).expect("enough samples");
        let (mut plain, mut with) = (0, 0);
        for d in &docs[300..] {
            let (kind, c) = compress(d, 1, Some(&dict)).expect("compresses");
            assert_eq!(kind, Compression::ZstdDict);
            assert_eq!(&decode(&c, d.len(), kind, Some(&dict)).unwrap(), d);
            assert!(decode(&c, d.len(), kind, None).is_err());
            with += c.len();
            plain += compress(d, 1, None).map_or(d.len(), |(_, c)| c.len());
        }
        assert!(
            with * 2 < plain,
            "dictionary: {with} bytes, without: {plain}"
        );
        assert!(Dictionary::train(&docs[..10]).is_none());
    }

    #[test]
    fn compressible_round_trip() {
        let data = b"order 12345 shipped to Berlin\n".repeat(5000);
        let (kind, c) = compress(&data, 3, None).expect("text compresses");
        assert_eq!(kind, Compression::Zstd);
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
        assert!(compress(&data, 3, None).is_none());
    }

    #[test]
    fn wrong_length_is_an_error() {
        let data = vec![7u8; 10_000];
        let (_, c) = compress(&data, 3, None).unwrap();
        assert!(decompress(&c, 9_999).is_err());
    }
}
