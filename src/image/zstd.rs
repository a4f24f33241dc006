//! A reader for zstd streams of one or more frames (the zstd CLI and Go's encoders may
//! write several), on top of `ruzstd`'s pure-Rust frame decoder.

use std::io::{self, BufRead, Read};

use ruzstd::decoding::{FrameDecoder, StreamingDecoder};

/// Decompresses every frame of a zstd stream in turn.
pub(crate) struct ZstdReader<R: BufRead> {
    frame: Option<StreamingDecoder<R, FrameDecoder>>,
}

impl<R: BufRead> ZstdReader<R> {
    /// Starts decoding the first frame of `source`.
    pub(crate) fn new(source: R) -> io::Result<Self> {
        let frame = StreamingDecoder::new(source).map_err(bad)?;
        Ok(ZstdReader { frame: Some(frame) })
    }
}

fn bad(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("invalid zstd stream: {e}"),
    )
}

impl<R: BufRead> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(frame) = self.frame.as_mut() else {
                return Ok(0);
            };
            let n = frame.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            // End of this frame: another one follows unless the input is exhausted.
            let Some(frame) = self.frame.take() else {
                return Ok(0);
            };
            let mut source = frame.into_inner();
            if source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            self.frame = Some(StreamingDecoder::new(source).map_err(bad)?);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruzstd::encoding::{compress_to_vec, CompressionLevel};

    #[test]
    fn decodes_concatenated_frames() {
        let mut data = compress_to_vec(&b"hello "[..], CompressionLevel::Fastest);
        data.extend(compress_to_vec(&b"world"[..], CompressionLevel::Fastest));
        let mut out = String::new();
        ZstdReader::new(&data[..])
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello world");
    }

    #[test]
    fn garbage_is_invalid_data() {
        let e = ZstdReader::new(&[0x28, 0xb5, 0x2f, 0xfd, 0xff, 0xff][..])
            .and_then(|mut r| r.read_to_end(&mut Vec::new()))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
