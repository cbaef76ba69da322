//! Request guards in front of the MCP endpoints: Host and Origin (DNS rebinding), and bearer
//! tokens compared in constant time.

use hyper::header::{AUTHORIZATION, HOST, ORIGIN};
use hyper::{HeaderMap, Uri};

use crate::config::ServerSettings;

/// Why a request was refused before reaching MCP.
pub enum Refusal {
    Forbidden(String),
    Unauthorized { token_given: bool },
}

pub struct Guard {
    tokens: Vec<Vec<u8>>,
    allowed_origins: Vec<String>,
    allowed_hosts: Option<Vec<String>>,
    loopback_only_hosts: bool,
}

impl Guard {
    pub fn new(server: &ServerSettings, tokens: &[String]) -> Self {
        Self {
            tokens: tokens.iter().map(|t| t.as_bytes().to_vec()).collect(),
            allowed_origins: server
                .allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            allowed_hosts: server
                .allowed_hosts
                .as_ref()
                .map(|h| h.iter().map(|x| x.to_ascii_lowercase()).collect()),
            loopback_only_hosts: server.listen.ip().is_loopback(),
        }
    }

    pub fn check(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), Refusal> {
        self.check_host(uri, headers)?;
        self.check_origin(headers)?;
        self.check_token(headers)
    }

    fn check_host(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), Refusal> {
        if headers.get_all(HOST).iter().count() > 1 {
            return Err(Refusal::Forbidden("more than one Host header".into()));
        }
        let authority = uri.authority().map(|a| a.as_str().to_string()).or_else(|| {
            headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        });
        let Some(authority) = authority else {
            return Ok(()); // HTTP/1.0 without Host: nothing a browser would send
        };
        let host = host_of(&authority.to_ascii_lowercase());
        let ok = match &self.allowed_hosts {
            Some(list) => list.iter().any(|h| h == "*" || *h == host),
            None if self.loopback_only_hosts => is_loopback_name(&host),
            None => true,
        };
        if ok {
            Ok(())
        } else {
            Err(Refusal::Forbidden(format!(
                "Host {authority:?} is not allowed (DNS rebinding protection); add it to server.allowed_hosts"
            )))
        }
    }

    fn check_origin(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(origin) = headers.get(ORIGIN) else {
            return Ok(()); // non-browser clients send none
        };
        let text = origin
            .to_str()
            .unwrap_or("")
            .trim_end_matches('/')
            .to_ascii_lowercase();
        if self.allowed_origins.iter().any(|o| o == "*" || *o == text) {
            return Ok(());
        }
        let host = text
            .split_once("://")
            .map(|(_, rest)| host_of(rest))
            .unwrap_or_default();
        if is_loopback_name(&host) {
            return Ok(());
        }
        Err(Refusal::Forbidden(format!(
            "Origin {text:?} is not allowed; add it to server.allowed_origins if this browser client is trusted"
        )))
    }

    fn check_token(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        if self.tokens.is_empty() {
            return Ok(());
        }
        let given = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(given) = given else {
            return Err(Refusal::Unauthorized { token_given: false });
        };
        // Compare against every token, without stopping early.
        let mut ok = false;
        for t in &self.tokens {
            ok |= aws_lc_rs::constant_time::verify_slices_are_equal(t, given.as_bytes()).is_ok();
        }
        if ok {
            Ok(())
        } else {
            Err(Refusal::Unauthorized { token_given: true })
        }
    }
}

/// The host part of `host[:port]` or `[v6]:port`.
fn host_of(authority: &str) -> String {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_string();
    }
    authority
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(authority)
        .to_string()
}

fn is_loopback_name(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_parsing_handles_ports_and_v6() {
        assert_eq!(host_of("example.com:8443"), "example.com");
        assert_eq!(host_of("[::1]:8443"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
        assert!(is_loopback_name("127.0.0.1"));
        assert!(is_loopback_name("::1"));
        assert!(!is_loopback_name("evil.example"));
    }
}
