//! The MCP endpoint's handling of a POST body: JSON parse, batch rules, message checks.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mcpgate::fuzzing::post_body(data, true);
    let _ = mcpgate::fuzzing::post_body(data, false);
});
