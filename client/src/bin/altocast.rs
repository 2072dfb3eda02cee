//! `altocast`: watch, get, rank and look up verified ALTO data.

fn main() -> std::process::ExitCode {
    altocast_client::cli::main()
}
