//! `altocast-rproxy`: see `altocast_rproxy::run`.

use std::process::ExitCode;

use altocast_rproxy::{Config, config};
use clap::Parser as _;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    altocast_rproxy::init_tracing("info,h2=warn,tower=warn");
    let args = match config::args_with_config_file(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => return bad_config(e),
    };
    let cfg = Config::parse_from(args);
    if let Err(e) = cfg.validate() {
        return bad_config(e);
    }
    if let Some(addr) = cfg.metrics
        && let Err(e) = altocast_rproxy::install_metrics(addr)
    {
        return bad_config(e);
    }
    let listener = match tokio::net::TcpListener::bind(cfg.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("altocast-rproxy: cannot listen on {}: {e}", cfg.listen);
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    altocast_rproxy::cancel_on_signal(shutdown.clone());
    match altocast_rproxy::run(cfg, listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("altocast-rproxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bad_config(e: anyhow::Error) -> ExitCode {
    eprintln!("altocast-rproxy: bad configuration: {e:#}");
    ExitCode::from(config::EXIT_CONFIG)
}
