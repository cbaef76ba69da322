//! The command line: one file per subcommand; this file parses and dispatches.

pub mod cert;
pub mod connect;
pub mod probe;
pub mod serve;
pub mod servers;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mcpgate",
    version,
    about = "A TLS-first gateway for the Model Context Protocol"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve MCP over HTTPS (Streamable HTTP at /mcp, legacy SSE at /sse) in front of a stdio server.
    Serve(Box<serve::ServeArgs>),
    /// Bridge local stdio to a remote HTTPS MCP server (for desktop clients).
    Connect(Box<connect::ConnectArgs>),
    /// Diagnose an MCP endpoint: TLS chain, trust, name, validity, redirects, MCP handshake.
    Probe(Box<probe::ProbeArgs>),
    /// Manage the registry of upstream servers through the admin API.
    Servers(Box<servers::ServersArgs>),
    /// Make a development CA, server and client certificates, and trust bundles.
    Cert(cert::CertArgs),
    /// Run the built-in demo MCP server on stdio (echo, add, slow, large).
    DemoServer {
        /// Also offer tools that exercise a gateway: crash, ask_client, notify.
        #[arg(long)]
        test_tools: bool,
        /// Also offer what the official conformance suite's server scenarios expect.
        #[arg(long)]
        conformance: bool,
        /// Serve Streamable HTTP (plain, JSON answers) on this address instead of stdio.
        #[arg(long, value_name = "ADDR")]
        http: Option<std::net::SocketAddr>,
        /// With --http: speak only the stateless 2026-07-28 revision (refuse initialize), as
        /// servers built on it alone do.
        #[arg(long, requires = "http")]
        stateless_only: bool,
    },
}

/// Runs the CLI; returns the process exit code.
pub fn run() -> i32 {
    let cli = Cli::parse();
    // The stdio demo server is one stream read in the main task: on a worker pool every message
    // would hop from the main thread to a worker and back (two thread wakeups), so it runs on
    // one thread. Everything else serves many connections at once and gets a worker per CPU.
    let mut builder = match cli.command {
        Command::DemoServer { http: None, .. } => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    if let Command::Probe(args) = cli.command {
        return match runtime.block_on(probe::run(*args)) {
            Ok(code) => code,
            Err(e) => report(&e),
        };
    }
    if let Command::Servers(args) = cli.command {
        crate::logging::init("warn", false);
        return match runtime.block_on(servers::run(*args)) {
            Ok(code) => code,
            Err(e) => report(&e),
        };
    }
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Probe(_) | Command::Servers(_) => Ok(()),
            Command::Serve(args) => serve::run(*args).await,
            Command::Connect(args) => connect::run(*args).await,
            Command::Cert(args) => cert::run(args),
            Command::DemoServer {
                test_tools,
                conformance,
                http: None,
                ..
            } => crate::demo::run(test_tools, conformance)
                .await
                .map_err(anyhow::Error::from),
            Command::DemoServer {
                test_tools,
                conformance,
                http: Some(addr),
                stateless_only,
            } => crate::demo::run_http(addr, test_tools, conformance, stateless_only)
                .await
                .map_err(anyhow::Error::from),
        }
    });
    match result {
        Ok(()) => 0,
        Err(e) => report(&e),
    }
}

/// Prints an error with its causes once, and picks the exit code (2 for config errors).
fn report(e: &anyhow::Error) -> i32 {
    eprintln!("error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    if e.downcast_ref::<crate::config::ConfigError>().is_some() {
        2
    } else {
        1
    }
}
