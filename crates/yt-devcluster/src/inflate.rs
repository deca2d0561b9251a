//! Request bodies the Python client sends with `Content-Encoding: gzip` (or zlib-wrapped
//! `deflate`), decoded with `flate2` under an output cap that refuses decompression bombs.

use std::io::Read;

/// A decoding error.
#[derive(Debug, thiserror::Error)]
pub enum InflateError {
    #[error("bad compressed data: {0}")]
    Corrupt(#[from] std::io::Error),
    #[error("the decoded body is larger than {0} bytes")]
    TooLarge(u64),
}

/// Output cap of a request body.
const MAX_OUTPUT: u64 = 1 << 30;

/// Decodes gzip (one or more members) or zlib-wrapped data.
pub fn gunzip(input: &[u8]) -> Result<Vec<u8>, InflateError> {
    decode(input, MAX_OUTPUT)
}

fn decode(input: &[u8], limit: u64) -> Result<Vec<u8>, InflateError> {
    // A zlib header: deflate method (low nibble 8) and a check value dividing by 31.
    let zlib = input.len() >= 2
        && input[0] & 0x0f == 8
        && (u16::from(input[0]) << 8 | u16::from(input[1])) % 31 == 0;
    let decoder: Box<dyn Read + '_> = if zlib {
        Box::new(flate2::read::ZlibDecoder::new(input))
    } else {
        Box::new(flate2::read::MultiGzDecoder::new(input))
    };
    let mut out = Vec::with_capacity(input.len().saturating_mul(3).min(64 << 20));
    // One byte past the limit tells "exactly at the limit" from "over it".
    decoder.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(InflateError::TooLarge(limit));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Runs `python3 -c script` with `input` on stdin; returns stdout.
    fn python(script: &str, input: &[u8]) -> Vec<u8> {
        let mut child = std::process::Command::new(test_support::tool("python3"))
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run python3");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write to python3");
        child.wait_with_output().expect("python3 output").stdout
    }

    #[test]
    fn decodes_what_python_compresses() {
        let data = b"hello hello hello world\n".repeat(20);
        let gzip = python(
            "import gzip,sys; sys.stdout.buffer.write(gzip.compress(sys.stdin.buffer.read()))",
            &data,
        );
        assert_eq!(gunzip(&gzip).expect("gzip"), data);
        // Two gzip members back to back are one body.
        let twice = [gzip.clone(), gzip].concat();
        assert_eq!(gunzip(&twice).expect("two members"), data.repeat(2));
        let random: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let zlib = python(
            "import zlib,sys; sys.stdout.buffer.write(zlib.compress(sys.stdin.buffer.read(), 9))",
            &random,
        );
        assert_eq!(gunzip(&zlib).expect("zlib"), random);
        assert!(gunzip(b"garbage data here!!").is_err());
    }

    #[test]
    fn refuses_output_over_the_cap() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&[0u8; 4096]).expect("compress");
        let bomb = encoder.finish().expect("finish");
        assert_eq!(decode(&bomb, 4096).expect("at the cap").len(), 4096);
        assert!(matches!(
            decode(&bomb, 4095),
            Err(InflateError::TooLarge(4095))
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..400usize {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = gunzip(&data);
            let mut gz = vec![0x1f, 0x8b, 8, (len % 32) as u8, 0, 0, 0, 0, 0, 0];
            gz.extend_from_slice(&data);
            let _ = gunzip(&gz);
        }
    }
}
