//! The SSE parser, fed in uneven chunks: events out, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parser = mcpgate::transport::sse::Parser::default();
    let mut out = Vec::new();
    let cut = data.first().map(|b| usize::from(*b) % 17 + 1).unwrap_or(1);
    for chunk in data.chunks(cut) {
        parser.feed(chunk, &mut out);
    }
});
