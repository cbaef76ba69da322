//! JSON-RPC framing: newline-delimited lines (with the length limit) and message classification.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcpgate::{jsonrpc, transport::ndjson};

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(async {
        let mut reader = tokio::io::BufReader::with_capacity(7, data);
        let mut buf = Vec::new();
        while let Ok(Ok(true)) | Ok(Err(_)) = ndjson::read_line(&mut reader, &mut buf, 256).await.map(|r| r.map(|more| more)) {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&buf) {
                let _ = jsonrpc::kind(&v);
                let _ = jsonrpc::progress_token(&v);
                if let Some(id) = v.get("id") {
                    let _ = jsonrpc::id_key(id);
                }
            }
            if buf.is_empty() && reader.buffer().is_empty() {
                break;
            }
        }
    });
});
