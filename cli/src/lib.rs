//! `cpsctl`: a thin client over the ConPaaS CRDs, with the verbs of ConPaaS' command-line
//! client in today's form. Everything it does, kubectl can do too; cpsctl knows the resources'
//! meaning (roles, phases, nodes, credits) and says what to do next when something is wrong.

pub mod args;
mod connect;
pub mod manifest;
mod output;
pub mod roles;
mod verbs;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

/// Runs cpsctl under the name it was invoked as (`cpsctl` or `kubectl conpaas`).
pub fn main(name: &'static str) -> ExitCode {
    let matches = args::Cli::command().name(name).bin_name(name).get_matches();
    let cli = match args::Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let args::Verb::Completion { shell } = cli.verb {
        let mut command = args::Cli::command();
        clap_complete::generate(
            shell,
            &mut command,
            name.replace(' ', "-"),
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(verbs::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
