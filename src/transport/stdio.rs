//! This process's standard input and output as async streams. On a pipe (how MCP clients and
//! `mcpgate serve` start a stdio server) they are driven by the reactor, so a line read or
//! written costs one syscall in the task that wants it; tokio's `stdin()`/`stdout()` hand every
//! read and write to a blocking thread instead, two thread wakeups each. Anything else (a
//! terminal, a file) keeps tokio's blocking streams, since non-blocking mode would be visible to
//! whoever else shares them.

use std::os::fd::AsFd;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::pipe;

/// Standard input, read without a blocking thread when it is a pipe.
pub fn stdin() -> Box<dyn AsyncRead + Send + Unpin> {
    match std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .and_then(|fd| pipe::Receiver::from_file(std::fs::File::from(fd)))
    {
        Ok(pipe) => Box::new(pipe),
        Err(_) => Box::new(tokio::io::stdin()),
    }
}

/// Standard output, written without a blocking thread when it is a pipe.
pub fn stdout() -> Box<dyn AsyncWrite + Send + Unpin> {
    match std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .and_then(|fd| pipe::Sender::from_file(std::fs::File::from(fd)))
    {
        Ok(pipe) => Box::new(pipe),
        Err(_) => Box::new(tokio::io::stdout()),
    }
}
