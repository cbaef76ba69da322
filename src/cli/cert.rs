//! `mcpgate cert`: the certificates a development or test setup needs, made right (validity
//! set, Authority and Subject Key Identifiers, key usages), with the config lines to use them.
//!
//! `ca` keeps the development CA in the data directory (key mode 0600); `server` and `client`
//! are issued by it; `bundle` writes the system store plus extra CAs as one PEM file for tools
//! that take a single file.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::config::default_data_dir;
use crate::tls::devca::{self, Authority, KeyKind, Spec};
use crate::tls::pem;

#[derive(Args)]
pub struct CertArgs {
    #[command(subcommand)]
    pub what: CertCommand,
    /// Where the development CA lives (default: $MCPGATE_DATA_DIR or ~/.local/share/mcpgate).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum CertCommand {
    /// Make the development CA (or show the one there is).
    Ca {
        /// RSA-2048 instead of ECDSA P-256.
        #[arg(long)]
        rsa: bool,
        /// Replace an existing CA (certificates it issued stop being trusted).
        #[arg(long)]
        force: bool,
    },
    /// Issue a server certificate; names are DNS names or IP addresses.
    Server {
        /// Default: localhost 127.0.0.1 ::1.
        names: Vec<String>,
        #[command(flatten)]
        out: Output,
    },
    /// Issue a client certificate for mTLS.
    Client {
        /// The client's name (the certificate's common name).
        name: String,
        #[command(flatten)]
        out: Output,
    },
    /// Write the system trust store plus extra CAs as one PEM file.
    Bundle {
        /// Extra CA files to add (default: the development CA).
        #[arg(long = "ca")]
        cas: Vec<PathBuf>,
        /// The file to write.
        #[arg(long, default_value = "ca-bundle.pem")]
        out: PathBuf,
    },
}

#[derive(Args)]
pub struct Output {
    /// Directory for the .crt and .key files (default: the data directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Validity in days.
    #[arg(long, default_value_t = 90)]
    pub days: i64,
    /// RSA-2048 instead of ECDSA P-256.
    #[arg(long)]
    pub rsa: bool,
}

pub fn run(args: CertArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    match args.what {
        CertCommand::Ca { rsa, force } => ca(&data_dir, rsa, force),
        CertCommand::Server { names, out } => {
            let names = if names.is_empty() {
                vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
            } else {
                names
            };
            issue(&data_dir, &names, &out, false)
        }
        CertCommand::Client { name, out } => {
            issue(&data_dir, std::slice::from_ref(&name), &out, true)
        }
        CertCommand::Bundle { cas, out } => bundle(&data_dir, &cas, &out),
    }
}

fn key_kind(rsa: bool) -> KeyKind {
    if rsa {
        KeyKind::Rsa2048
    } else {
        KeyKind::EcdsaP256
    }
}

fn ca(data_dir: &Path, rsa: bool, force: bool) -> anyhow::Result<()> {
    let cert = data_dir.join("ca.crt");
    if force {
        // The served development certificate was issued by the old CA: make it anew too.
        for f in ["ca.crt", "ca.key", "server.crt", "server.key"] {
            let _ = std::fs::remove_file(data_dir.join(f));
        }
    }
    let existed = cert.exists();
    if !existed {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let ca = Authority::new_root(&Spec::new("mcpgate development CA", 3650).key(key_kind(rsa)))
            .map_err(anyhow::Error::msg)?;
        devca::write_private(&data_dir.join("ca.key"), ca.issued.key_pem.as_bytes())
            .map_err(anyhow::Error::msg)?;
        devca::write_public(&cert, ca.issued.cert_pem.as_bytes()).map_err(anyhow::Error::msg)?;
    }
    let ca = devca::ensure_dev_ca(data_dir).map_err(anyhow::Error::msg)?;
    println!(
        "{} development CA: {}",
        if existed { "existing" } else { "new" },
        cert.display()
    );
    println!(
        "  private key:  {} (mode 0600)",
        data_dir.join("ca.key").display()
    );
    println!(
        "  fingerprint:  {}",
        crate::tls::fingerprint(&ca.issued.der)
    );
    println!();
    println!("Clients trust it with:");
    println!("  mcpgate connect URL --ca {}", cert.display());
    println!("  mcp_servers.<name>.tls.ca_cert: {}", cert.display());
    println!("A listener verifies client certificates it issued with:");
    println!(
        "  tls:\n    client_ca_file: {}\n    client_auth: verify",
        cert.display()
    );
    Ok(())
}

fn issue(data_dir: &Path, names: &[String], out: &Output, client: bool) -> anyhow::Result<()> {
    if out.days <= 0 || out.days > 3650 {
        bail!("--days {} is out of range; give 1 to 3650", out.days);
    }
    let ca = devca::ensure_dev_ca(data_dir).map_err(anyhow::Error::msg)?;
    let first = names.first().map(String::as_str).unwrap_or("localhost");
    let spec = Spec::new(first, out.days).key(key_kind(out.rsa));
    let issued = if client {
        ca.client(&spec)
    } else {
        ca.server(&spec.names(names.iter().cloned()))
    }
    .map_err(|e| anyhow::anyhow!("cannot issue the certificate: {e}"))?;
    let dir = out.out.clone().unwrap_or_else(|| data_dir.to_path_buf());
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stem = first.replace([':', '/', '*'], "_");
    // The data directory also holds ca.* and serve's own server.*: never write over them.
    let stem = match (client, stem.as_str()) {
        (true, _) => format!("client-{stem}"),
        (false, "ca" | "server") => format!("server-{stem}"),
        (false, _) => stem,
    };
    let cert_file = dir.join(format!("{stem}.crt"));
    let key_file = dir.join(format!("{stem}.key"));
    devca::write_private(&key_file, issued.key_pem.as_bytes()).map_err(anyhow::Error::msg)?;
    devca::write_public(&cert_file, issued.cert_pem.as_bytes()).map_err(anyhow::Error::msg)?;
    let ca_file = data_dir.join("ca.crt");
    println!(
        "{} certificate for {}: {}",
        if client { "client" } else { "server" },
        names.join(", "),
        cert_file.display()
    );
    println!("  private key: {} (mode 0600)", key_file.display());
    println!(
        "  issued by:   {} (valid {} days)",
        ca_file.display(),
        out.days
    );
    println!();
    if client {
        println!(
            "Use it from mcpgate connect:\n  mcpgate connect URL --cert {} --key {}",
            cert_file.display(),
            key_file.display()
        );
        println!(
            "or in an upstream's profile:\n  tls:\n    cert_file: {}\n    key_file: {}",
            cert_file.display(),
            key_file.display()
        );
        println!(
            "The server verifies it with:\n  tls:\n    client_ca_file: {}\n    client_auth: verify",
            ca_file.display()
        );
    } else {
        println!(
            "Serve with it:\n  tls:\n    cert_file: {}\n    key_file: {}",
            cert_file.display(),
            key_file.display()
        );
        println!(
            "Clients trust it with --ca {} (or ca_cert: {})",
            ca_file.display(),
            ca_file.display()
        );
    }
    Ok(())
}

fn bundle(data_dir: &Path, cas: &[PathBuf], out: &Path) -> anyhow::Result<()> {
    let extra: Vec<PathBuf> = if cas.is_empty() {
        vec![data_dir.join("ca.crt")]
    } else {
        cas.to_vec()
    };
    let system = rustls_native_certs::load_native_certs();
    let mut text = String::new();
    for c in &system.certs {
        text.push_str(&pem::cert_pem(c.as_ref()));
    }
    let mut added = 0;
    for path in &extra {
        for c in pem::certs_file_or_dir("--ca", path).map_err(|e| anyhow::anyhow!("{e}"))? {
            text.push_str(&pem::cert_pem(c.as_ref()));
            added += 1;
        }
    }
    devca::write_public(out, text.as_bytes()).map_err(anyhow::Error::msg)?;
    println!(
        "wrote {}: {} system CA certificates + {added} extra",
        out.display(),
        system.certs.len()
    );
    println!(
        "For tools that take one file:\n  export SSL_CERT_FILE={0} REQUESTS_CA_BUNDLE={0} CURL_CA_BUNDLE={0}",
        out.display()
    );
    println!("(mcpgate itself needs no bundle: ca_cert is added to the system store.)");
    Ok(())
}
