//! A small DEFLATE/gzip decoder (after zlib's `puff.c`), for request bodies the Python client
//! sends with `Content-Encoding: gzip`. The workspace has no compression crate and writes are
//! small in development, so a compact, strict decoder is enough.

/// A decoding error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad compressed data: {0}")]
pub struct InflateError(pub &'static str);

const MAX_BITS: usize = 15;
/// Output cap, to refuse decompression bombs.
const MAX_OUTPUT: usize = 1 << 30;

struct Bits<'a> {
    input: &'a [u8],
    pos: usize,
    bit_buf: u64,
    bit_count: u32,
}

impl<'a> Bits<'a> {
    fn need(&mut self, n: u32) -> Result<u32, InflateError> {
        while self.bit_count < n {
            let byte = *self
                .input
                .get(self.pos)
                .ok_or(InflateError("unexpected end of data"))?;
            self.pos += 1;
            self.bit_buf |= u64::from(byte) << self.bit_count;
            self.bit_count += 8;
        }
        let v = (self.bit_buf & ((1u64 << n) - 1)) as u32;
        self.bit_buf >>= n;
        self.bit_count -= n;
        Ok(v)
    }
}

struct Huffman {
    counts: [u16; MAX_BITS + 1],
    symbols: Vec<u16>,
}

impl Huffman {
    fn new(lengths: &[u8]) -> Result<Huffman, InflateError> {
        let mut counts = [0u16; MAX_BITS + 1];
        for &l in lengths {
            counts[l as usize] += 1;
        }
        let mut left: i32 = 1;
        for &c in counts.iter().skip(1) {
            left <<= 1;
            left -= i32::from(c);
            if left < 0 {
                return Err(InflateError("over-subscribed code"));
            }
        }
        let mut offs = [0u16; MAX_BITS + 2];
        for len in 1..=MAX_BITS {
            offs[len + 1] = offs[len] + counts[len];
        }
        let mut symbols = vec![0u16; lengths.len()];
        for (sym, &l) in lengths.iter().enumerate() {
            if l != 0 {
                symbols[offs[l as usize] as usize] = sym as u16;
                offs[l as usize] += 1;
            }
        }
        Ok(Huffman { counts, symbols })
    }

    fn decode(&self, bits: &mut Bits<'_>) -> Result<u16, InflateError> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..=MAX_BITS {
            code |= bits.need(1)? as i32;
            let count = i32::from(self.counts[len]);
            if code - count < first {
                return self
                    .symbols
                    .get((index + (code - first)) as usize)
                    .copied()
                    .ok_or(InflateError("bad code"));
            }
            index += count;
            first += count;
            first <<= 1;
            code <<= 1;
        }
        Err(InflateError("ran out of codes"))
    }
}

const LEN_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LEN_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

fn codes(
    bits: &mut Bits<'_>,
    out: &mut Vec<u8>,
    lit: &Huffman,
    dist: &Huffman,
) -> Result<(), InflateError> {
    loop {
        let sym = lit.decode(bits)?;
        match sym {
            0..=255 => out.push(sym as u8),
            256 => return Ok(()),
            _ => {
                let i = usize::from(sym - 257);
                if i >= 29 {
                    return Err(InflateError("bad length symbol"));
                }
                let len = usize::from(LEN_BASE[i]) + bits.need(u32::from(LEN_EXTRA[i]))? as usize;
                let d = usize::from(dist.decode(bits)?);
                if d >= 30 {
                    return Err(InflateError("bad distance symbol"));
                }
                let distance =
                    usize::from(DIST_BASE[d]) + bits.need(u32::from(DIST_EXTRA[d]))? as usize;
                if distance > out.len() {
                    return Err(InflateError("distance too far back"));
                }
                if out.len() + len > MAX_OUTPUT {
                    return Err(InflateError("output too large"));
                }
                let start = out.len() - distance;
                for k in 0..len {
                    let b = out[start + k];
                    out.push(b);
                }
            }
        }
    }
}

fn fixed_tables() -> Result<(Huffman, Huffman), InflateError> {
    let mut lengths = [0u8; 288];
    for (i, l) in lengths.iter_mut().enumerate() {
        *l = match i {
            0..=143 => 8,
            144..=255 => 9,
            256..=279 => 7,
            _ => 8,
        };
    }
    Ok((Huffman::new(&lengths)?, Huffman::new(&[5u8; 30])?))
}

fn dynamic_tables(bits: &mut Bits<'_>) -> Result<(Huffman, Huffman), InflateError> {
    const ORDER: [usize; 19] = [
        16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
    ];
    let nlen = bits.need(5)? as usize + 257;
    let ndist = bits.need(5)? as usize + 1;
    let ncode = bits.need(4)? as usize + 4;
    if nlen > 286 || ndist > 30 {
        return Err(InflateError("bad counts"));
    }
    let mut code_lengths = [0u8; 19];
    for &o in ORDER.iter().take(ncode) {
        code_lengths[o] = bits.need(3)? as u8;
    }
    let code = Huffman::new(&code_lengths)?;
    let mut lengths = vec![0u8; nlen + ndist];
    let mut i = 0;
    while i < nlen + ndist {
        let sym = code.decode(bits)?;
        if sym < 16 {
            lengths[i] = sym as u8;
            i += 1;
            continue;
        }
        let (value, repeat) = match sym {
            16 => {
                if i == 0 {
                    return Err(InflateError("repeat with no previous length"));
                }
                (lengths[i - 1], 3 + bits.need(2)? as usize)
            }
            17 => (0, 3 + bits.need(3)? as usize),
            _ => (0, 11 + bits.need(7)? as usize),
        };
        if i + repeat > nlen + ndist {
            return Err(InflateError("too many lengths"));
        }
        for l in &mut lengths[i..i + repeat] {
            *l = value;
        }
        i += repeat;
    }
    if lengths[256] == 0 {
        return Err(InflateError("no end-of-block code"));
    }
    Ok((
        Huffman::new(&lengths[..nlen])?,
        Huffman::new(&lengths[nlen..])?,
    ))
}

/// Decodes a raw DEFLATE stream; returns the data and the bytes consumed.
pub fn inflate(input: &[u8]) -> Result<(Vec<u8>, usize), InflateError> {
    let mut bits = Bits {
        input,
        pos: 0,
        bit_buf: 0,
        bit_count: 0,
    };
    let mut out = Vec::with_capacity(input.len().saturating_mul(3).min(64 << 20));
    loop {
        let last = bits.need(1)?;
        match bits.need(2)? {
            0 => {
                bits.bit_buf = 0;
                bits.bit_count = 0;
                let header = input
                    .get(bits.pos..bits.pos + 4)
                    .ok_or(InflateError("truncated stored block"))?;
                let len = usize::from(u16::from_le_bytes([header[0], header[1]]));
                let nlen = u16::from_le_bytes([header[2], header[3]]);
                if nlen != !(len as u16) {
                    return Err(InflateError("stored block length mismatch"));
                }
                bits.pos += 4;
                let data = input
                    .get(bits.pos..bits.pos + len)
                    .ok_or(InflateError("truncated stored block"))?;
                out.extend_from_slice(data);
                bits.pos += len;
            }
            1 => {
                let (lit, dist) = fixed_tables()?;
                codes(&mut bits, &mut out, &lit, &dist)?;
            }
            2 => {
                let (lit, dist) = dynamic_tables(&mut bits)?;
                codes(&mut bits, &mut out, &lit, &dist)?;
            }
            _ => return Err(InflateError("bad block type")),
        }
        if last == 1 {
            return Ok((out, bits.pos));
        }
    }
}

/// Decodes gzip (one or more members) or zlib-wrapped data.
pub fn gunzip(mut input: &[u8]) -> Result<Vec<u8>, InflateError> {
    if input.len() >= 2
        && input[0] == 0x78
        && (u16::from(input[0]) << 8 | u16::from(input[1])) % 31 == 0
    {
        return inflate(&input[2..]).map(|(d, _)| d);
    }
    let mut out = Vec::new();
    while !input.is_empty() {
        if input.len() < 18 || input[0] != 0x1f || input[1] != 0x8b || input[2] != 8 {
            return Err(InflateError("not gzip data"));
        }
        let flags = input[3];
        let mut pos = 10;
        if flags & 4 != 0 {
            let xlen = usize::from(u16::from_le_bytes([input[pos], input[pos + 1]]));
            pos += 2 + xlen;
        }
        for flag in [8u8, 16] {
            if flags & flag != 0 {
                while *input
                    .get(pos)
                    .ok_or(InflateError("truncated gzip header"))?
                    != 0
                {
                    pos += 1;
                }
                pos += 1;
            }
        }
        if flags & 2 != 0 {
            pos += 2;
        }
        let body = input
            .get(pos..)
            .ok_or(InflateError("truncated gzip header"))?;
        let (data, used) = inflate(body)?;
        out.extend_from_slice(&data);
        let next = pos + used + 8;
        input = input
            .get(next..)
            .ok_or(InflateError("truncated gzip trailer"))?;
        if out.len() > MAX_OUTPUT {
            return Err(InflateError("output too large"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_python_gzip() {
        // python3 -c 'import gzip,sys; sys.stdout.buffer.write(gzip.compress(b"hello hello hello world\n"*20))'
        let data = b"hello hello hello world\n".repeat(20);
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import gzip,sys; sys.stdout.buffer.write(gzip.compress(sys.stdin.buffer.read()))",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(&data)?;
                child.wait_with_output()
            });
        let Ok(out) = out else { return };
        assert_eq!(gunzip(&out.stdout).unwrap(), data);
        let random: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let out = std::process::Command::new("python3")
            .args(["-c", "import zlib,sys; sys.stdout.buffer.write(zlib.compress(sys.stdin.buffer.read(), 9))"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(&random)?;
                child.wait_with_output()
            })
            .unwrap();
        assert_eq!(gunzip(&out.stdout).unwrap(), random);
        assert!(gunzip(b"garbage data here!!").is_err());
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
            let _ = inflate(&data);
            let mut gz = vec![0x1f, 0x8b, 8, (len % 32) as u8, 0, 0, 0, 0, 0, 0];
            gz.extend_from_slice(&data);
            let _ = gunzip(&gz);
        }
    }
}
