//! The config loader: any text is either a typed Config or a ConfigError, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(raw) = mcpgate::config::parse_raw(text) {
            let _ = mcpgate::config::resolve(raw, None);
        }
    }
});
