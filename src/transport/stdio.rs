//! This process's standard input and output as async streams. On a pipe (how MCP clients and
//! `mcpgate serve` start a stdio server) they are driven by the reactor, so a line read or
//! written costs one syscall in the task that wants it; tokio's `stdin()`/`stdout()` hand every
//! read and write to a blocking thread instead, two thread wakeups each. Anything else (a
//! terminal, a file) keeps tokio's blocking streams, since non-blocking mode would be visible to
//! whoever else shares them.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::pipe;

/// Standard input, read without a blocking thread when it is a pipe.
pub fn stdin() -> Box<dyn AsyncRead + Send + Unpin> {
    match owned(std::io::stdin().as_fd()).and_then(pipe::Receiver::from_file) {
        Ok(pipe) => Box::new(pipe),
        Err(_) => Box::new(tokio::io::stdin()),
    }
}

/// Standard output, written without a blocking thread when it is a pipe.
pub fn stdout() -> Box<dyn AsyncWrite + Send + Unpin> {
    match owned(std::io::stdout().as_fd()).and_then(pipe::Sender::from_file) {
        Ok(pipe) => Box::new(pipe),
        Err(_) => Box::new(tokio::io::stdout()),
    }
}

/// A descriptor of our own for `fd`, so the pipe stream owns what it closes.
fn owned(fd: BorrowedFd<'_>) -> std::io::Result<File> {
    fd.try_clone_to_owned().map(File::from)
}
