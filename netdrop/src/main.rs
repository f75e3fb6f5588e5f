use std::process::ExitCode;

use clap::Parser as _;
use netdrop::cli::{Cli, Command};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("netdrop: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Watch(args) => netdrop::watch::run(args).await.map(|()| ExitCode::SUCCESS),
            #[cfg(feature = "lab")]
            Command::Demo(args) => netdrop::demo::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Check(args) => netdrop::commands::run_check(args),
            Command::Explain(args) => netdrop::commands::run_explain(args),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netdrop: {e:#}");
            ExitCode::FAILURE
        }
    }
}
