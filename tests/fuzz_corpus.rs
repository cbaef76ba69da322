//! Replays the fuzz seed corpora (fuzz/corpus/) through the same entry points as the fuzz
//! targets, on every `cargo test`: what once passed the fuzzers must keep passing without a
//! panic. Crashes found by `scripts/fuzz.sh` are added here as named regression tests.

use std::path::Path;

fn inputs(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!out.is_empty(), "the {target} corpus is empty");
    out.sort();
    out
}

#[test]
fn config_corpus_loads_or_errors() {
    for data in inputs("config") {
        if let Ok(text) = std::str::from_utf8(&data)
            && let Ok(raw) = mcpgate::config::parse_raw(text)
        {
            let _ = mcpgate::config::resolve(raw, None);
        }
    }
}

#[test]
fn sse_corpus_parses() {
    for data in inputs("sse_parser") {
        let mut parser = mcpgate::transport::sse::Parser::default();
        let mut out = Vec::new();
        for chunk in data.chunks(5) {
            parser.feed(chunk, &mut out);
        }
    }
}

#[test]
fn jsonrpc_corpus_classifies() {
    for data in inputs("jsonrpc_framing")
        .into_iter()
        .chain(inputs("post_body"))
    {
        for line in data.split(|b| *b == b'\n') {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) {
                let _ = mcpgate::jsonrpc::kind(&v);
                let _ = mcpgate::jsonrpc::progress_token(&v);
            }
        }
    }
}

#[test]
fn pem_corpus_loads_or_errors() {
    let path = Path::new("corpus.pem");
    for data in inputs("pem") {
        let _ = mcpgate::tls::pem::certs_from_bytes("tls.cert_file", path, &data);
        let _ = mcpgate::tls::pem::private_key_from_bytes("tls.key_file", path, &data);
    }
}

#[test]
fn chain_corpus_is_described_or_refused() {
    for data in inputs("chain_analysis") {
        let info: Vec<_> = mcpgate::tls::inspect::describe(&data).into_iter().collect();
        let _ = mcpgate::tls::inspect::notes(&info, &[]);
        let _ = mcpgate::tls::diagnose::Cert::parse(&data);
    }
}
