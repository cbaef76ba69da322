//! Newline-delimited JSON (the MCP stdio transport), with a bound on line length.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Reads one line (without its newline) into `buf`. Returns `Ok(false)` at end of input.
///
/// A line longer than `limit` is consumed and reported as `Err(TooLong)` so one bad line
/// cannot exhaust memory; the stream stays usable after it.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<Result<bool, TooLong>> {
    buf.clear();
    let mut overflow = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if overflow {
                Err(TooLong)
            } else {
                Ok(!buf.is_empty())
            });
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if !overflow {
            if buf.len() + chunk.len() > limit {
                overflow = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(available.len());
        reader.consume(used);
        if done.is_some() {
            if overflow {
                return Ok(Err(TooLong));
            }
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Ok(true));
        }
    }
}

/// Writes each message as one line to `out`, flushing each, until the channel closes or a
/// write fails (stdio servers and `connect` speak this way on stdout).
pub async fn write_lines<W: tokio::io::AsyncWrite + Unpin>(
    mut out: W,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) {
    use tokio::io::AsyncWriteExt;
    let mut lines = Vec::new();
    while let Some(v) = rx.recv().await {
        // Whatever else is already queued goes out in the same write.
        let mut next = Some(v);
        while let Some(v) = next {
            let _ = serde_json::to_writer(&mut lines, &v);
            lines.push(b'\n');
            next = if lines.len() < 64 << 10 {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if out.write_all(&lines).await.is_err() || out.flush().await.is_err() {
            return;
        }
        lines.clear();
    }
}

/// A line exceeded the limit and was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn splits_lines_and_skips_overlong_ones() {
        let data = b"{\"a\":1}\r\nxxxxxxxxxxxxxxxxxxxx\n{}\nlast".to_vec();
        let mut r = tokio::io::BufReader::with_capacity(4, &data[..]);
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut r, &mut buf, 10).await.unwrap(), Ok(true));
        assert_eq!(buf, b"{\"a\":1}");
        assert_eq!(read_line(&mut r, &mut buf, 10).await.unwrap(), Err(TooLong));
        assert_eq!(read_line(&mut r, &mut buf, 10).await.unwrap(), Ok(true));
        assert_eq!(buf, b"{}");
        assert_eq!(read_line(&mut r, &mut buf, 10).await.unwrap(), Ok(true));
        assert_eq!(buf, b"last");
        assert_eq!(read_line(&mut r, &mut buf, 10).await.unwrap(), Ok(false));
    }
}
