//! The `mcpgate` binary: everything lives in the library; this only hands over the exit code.

#![forbid(unsafe_code)]

/// mimalloc instead of the system allocator: hyper reserves a fresh read buffer after every
/// message, and glibc's malloc answers each of those large requests by consolidating its fast
/// bins, a cost paid on every request through the proxy.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(mcpgate::cli::run());
}
