//! Lines of an input stream with bounded memory: one reused buffer, no allocation per
//! line, and a per-line length limit (a longer line is reported and skipped, never
//! buffered).

use std::io::{self, Read};

/// One line, numbered from 1.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// The line's bytes, without the `\n` (and without a trailing `\r`).
    Text(&'a [u8]),
    /// The line was longer than the limit: its length in bytes (it was skipped).
    TooLong(u64),
}

/// Splits a byte stream into lines, reading it in chunks.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    max_line_bytes: usize,
    line_number: u64,
    bytes_read: u64,
}

/// How much is read from the input at once (at least).
const CHUNK_BYTES: usize = 256 * 1024;

enum Found {
    Line { from: usize, to: usize },
    TooLong(u64),
    End,
}

impl<R: Read> LineReader<R> {
    /// Reads `inner`; lines longer than `max_line_bytes` are skipped and reported.
    pub fn new(inner: R, max_line_bytes: usize) -> LineReader<R> {
        let max_line_bytes = max_line_bytes.max(1);
        LineReader {
            inner,
            buf: vec![0; max_line_bytes + CHUNK_BYTES],
            start: 0,
            end: 0,
            eof: false,
            max_line_bytes,
            line_number: 0,
            bytes_read: 0,
        }
    }

    /// Bytes read from the input so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The number of the last line returned (0 before the first).
    pub fn line_number(&self) -> u64 {
        self.line_number
    }

    /// The next line and its number; `None` at the end of the input. A read error
    /// (a truncated gzip stream, a connection lost) is returned as is: the partial
    /// line before it is never returned as a line.
    pub fn next_line(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        let found = self.find_line()?;
        match found {
            Found::End => Ok(None),
            Found::TooLong(length) => {
                self.line_number += 1;
                Ok(Some((self.line_number, Line::TooLong(length))))
            }
            Found::Line { from, mut to } => {
                self.line_number += 1;
                if to > from && self.buf[to - 1] == b'\r' {
                    to -= 1;
                }
                Ok(Some((self.line_number, Line::Text(&self.buf[from..to]))))
            }
        }
    }

    fn find_line(&mut self) -> io::Result<Found> {
        let mut searched = self.start;
        loop {
            if let Some(offset) = memchr::memchr(b'\n', &self.buf[searched..self.end]) {
                let newline = searched + offset;
                let from = self.start;
                self.start = newline + 1;
                if newline - from > self.max_line_bytes {
                    return Ok(Found::TooLong((newline - from) as u64));
                }
                return Ok(Found::Line { from, to: newline });
            }
            searched = self.end;
            if self.eof {
                if self.start < self.end {
                    let from = self.start;
                    self.start = self.end;
                    return Ok(Found::Line { from, to: self.end });
                }
                return Ok(Found::End);
            }
            if self.end - self.start > self.max_line_bytes {
                return self.skip_long_line();
            }
            if self.start > 0 && self.end == self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                searched -= self.start;
                self.start = 0;
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
                searched = 0;
            }
            self.fill()?;
        }
    }

    /// Reads more input after `end`; sets `eof` when there is none.
    fn fill(&mut self) -> io::Result<()> {
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    self.bytes_read += n as u64;
                    return Ok(());
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// Discards the current line up to and including its newline.
    fn skip_long_line(&mut self) -> io::Result<Found> {
        let mut length = (self.end - self.start) as u64;
        loop {
            self.start = 0;
            self.end = 0;
            self.fill()?;
            if self.eof {
                return Ok(Found::TooLong(length));
            }
            if let Some(offset) = memchr::memchr(b'\n', &self.buf[..self.end]) {
                length += offset as u64;
                self.start = offset + 1;
                return Ok(Found::TooLong(length));
            }
            length += self.end as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `step` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn lines(data: &[u8], step: usize, max: usize) -> Vec<(u64, Result<String, u64>)> {
        let mut reader = LineReader::new(Trickle { data, step }, max);
        let mut out = Vec::new();
        while let Some((number, line)) = reader.next_line().unwrap() {
            out.push((
                number,
                match line {
                    Line::Text(text) => Ok(String::from_utf8_lossy(text).into_owned()),
                    Line::TooLong(length) => Err(length),
                },
            ));
        }
        assert_eq!(reader.bytes_read(), data.len() as u64);
        out
    }

    fn check(data: &[u8], max: usize, expected: &[(u64, Result<&str, u64>)]) {
        let expected: Vec<(u64, Result<String, u64>)> = expected
            .iter()
            .map(|(n, line)| (*n, line.map(str::to_owned)))
            .collect();
        for step in [1, 2, 3, 7, 1 << 20] {
            assert_eq!(lines(data, step, max), expected, "step {step}");
        }
    }

    #[test]
    fn splits_lines_across_any_read_size() {
        check(
            b"a,b\r\n\nc\nlast",
            10,
            &[(1, Ok("a,b")), (2, Ok("")), (3, Ok("c")), (4, Ok("last"))],
        );
        check(b"", 10, &[]);
        check(b"x\n", 10, &[(1, Ok("x"))]);
    }

    #[test]
    fn long_lines_are_skipped_and_measured() {
        check(
            b"ok\n0123456789abc\nok2\n0123456789abcdef",
            10,
            &[(1, Ok("ok")), (2, Err(13)), (3, Ok("ok2")), (4, Err(16))],
        );
    }

    #[test]
    fn long_lines_bigger_than_the_buffer_are_skipped() {
        let mut data = b"a\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 3 * CHUNK_BYTES + 5));
        data.extend_from_slice(b"\nb\n");
        let got = lines(&data, 1 << 20, 100);
        assert_eq!(
            got,
            vec![
                (1, Ok("a".to_owned())),
                (2, Err(3 * CHUNK_BYTES as u64 + 5)),
                (3, Ok("b".to_owned())),
            ]
        );
    }

    #[test]
    fn a_read_error_never_yields_the_partial_line() {
        struct Broken(bool);
        impl Read for Broken {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                if self.0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "cut"));
                }
                self.0 = true;
                out[..7].copy_from_slice(b"one\ntwo");
                Ok(7)
            }
        }
        let mut reader = LineReader::new(Broken(false), 100);
        assert_eq!(
            reader.next_line().unwrap(),
            Some((1, Line::Text(&b"one"[..])))
        );
        assert!(reader.next_line().is_err());
    }
}
