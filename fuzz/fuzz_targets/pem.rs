//! PEM loading of certificates and keys.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcpgate::tls::pem;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.pem");
    let _ = pem::certs_from_bytes("tls.cert_file", path, data);
    let _ = pem::private_key_from_bytes("tls.key_file", path, data);
});
