//! probe's chain analysis and the diagnosis's certificate reading, on arbitrary DER.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcpgate::tls::{diagnose, inspect};

fuzz_target!(|data: &[u8]| {
    // Up to three certificates, split by the first two bytes.
    let a = data.first().map(|b| usize::from(*b)).unwrap_or(0).min(data.len());
    let b = data.get(1).map(|b| a + usize::from(*b)).unwrap_or(a).min(data.len());
    let ders = vec![data[..a].to_vec(), data[a..b].to_vec(), data[b..].to_vec()];
    let infos: Vec<_> = ders.iter().filter_map(|d| inspect::describe(d)).collect();
    let links = inspect::issuer_links(&ders);
    let _ = inspect::notes(&infos, &links);
    for d in &ders {
        let _ = diagnose::Cert::parse(d);
    }
});
