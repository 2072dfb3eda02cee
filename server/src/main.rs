//! `altocast-server`: see `altocast_server::run`.

use std::process::ExitCode;

use altocast_rproxy::config::{EXIT_CONFIG, args_with_config_file};
use altocast_server::{
    config::{Cli, Command},
    keyring, keys,
};
use clap::Parser as _;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let args = match args_with_config_file(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => return fail(EXIT_CONFIG, format!("bad configuration: {e:#}")),
    };
    let cli = Cli::parse_from(args);
    // The demo prints its own progress; keep logs to warnings unless RUST_LOG says otherwise.
    altocast_rproxy::init_tracing(if matches!(cli.command, Some(Command::Demo(_))) {
        "warn"
    } else {
        "info,h2=warn,tower=warn"
    });
    match cli.command {
        Some(Command::Keygen { data_dir, force }) => match keys::generate(&data_dir, force) {
            Ok(k) => {
                println!("{}", k.public().to_spki_pem().trim_end());
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, format!("{e:#}")),
        },
        Some(Command::Pubkey { data_dir, root: false }) => match keys::load(&data_dir) {
            Ok(k) => {
                println!("{}", k.public().to_spki_pem().trim_end());
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, format!("{e:#}")),
        },
        Some(Command::Pubkey { data_dir, root: true }) => match keyring::Keyring::load_or_init(&data_dir) {
            Ok(r) => {
                println!("{}", r.list.root.to_spki_pem().trim_end());
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, format!("{e:#}")),
        },
        Some(Command::Keys(args)) => {
            use altocast_server::{config::KeysCommand as K, keyring::Change};
            let root_key = args.root_key.clone().unwrap_or_else(|| keyring::root_key_path(&args.data_dir));
            let change = match args.command {
                K::List => {
                    return match keyring::describe(&args.data_dir) {
                        Ok(s) => {
                            print!("{s}");
                            ExitCode::SUCCESS
                        }
                        Err(e) => fail(1, format!("{e:#}")),
                    };
                }
                K::Add => Change::Add,
                K::Retire { id } => Change::Retire(id),
                K::Revoke { id } => Change::Revoke(id),
                K::Renew => Change::Renew,
                K::RotateRoot => Change::RotateRoot,
            };
            match keyring::change(&args.data_dir, &root_key, &change, args.valid_days) {
                Ok(line) => {
                    println!("{line}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(1, format!("keys: {e:#}")),
            }
        }
        Some(Command::Demo(args)) => match altocast_server::demo::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(1, format!("demo: {e:#}")),
        },
        Some(Command::Gen(args)) => match altocast_server::generate::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(1, format!("gen: {e:#}")),
        },
        None => {
            let cfg = cli.serve;
            if let Err(e) = cfg.validate() {
                return fail(EXIT_CONFIG, format!("bad configuration: {e:#}"));
            }
            if let Some(addr) = cfg.metrics
                && let Err(e) = altocast_rproxy::install_metrics(addr)
            {
                return fail(EXIT_CONFIG, format!("{e:#}"));
            }
            let listener = match tokio::net::TcpListener::bind(cfg.listen).await {
                Ok(l) => l,
                Err(e) => return fail(1, format!("cannot listen on {}: {e}", cfg.listen)),
            };
            let shutdown = CancellationToken::new();
            altocast_rproxy::cancel_on_signal(shutdown.clone());
            match altocast_server::run(cfg, listener, shutdown).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(1, format!("{e:#}")),
            }
        }
    }
}

fn fail(code: u8, msg: String) -> ExitCode {
    eprintln!("altocast-server: {msg}");
    ExitCode::from(code)
}
