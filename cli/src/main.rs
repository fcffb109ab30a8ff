//! The `logstream` binary: parse, run, exit 0 / 1 (usage) / 2 (runtime failure) with one line
//! on stderr.

use std::process::ExitCode;

use clap::Parser;
use logstream::{
    args::Cli,
    error::{EXIT_FAILURE, EXIT_USAGE},
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // clap exits 2 on usage errors; LogStream keeps 2 for runtime failures.
            return code(if e.exit_code() == 0 { 0 } else { EXIT_USAGE });
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return code(EXIT_FAILURE);
        }
    };
    match runtime.block_on(logstream::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            code(e.exit_code())
        }
    }
}

fn code(n: u8) -> ExitCode {
    ExitCode::from(n)
}
