//! `logstream-e2e`: checks the tools, then runs the scenario (see `scenario.rs`). Exit codes:
//! 0 passed, 1 a check failed, 2 the machine lacks what the suite needs.

use std::process::ExitCode;

use logstream_e2e::{config::Config, preflight, scenario};

fn main() -> ExitCode {
    if let Err(e) = preflight::check() {
        eprintln!("logstream-e2e: {e}");
        return ExitCode::from(2);
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("logstream-e2e: {e}");
            return ExitCode::from(2);
        }
    };
    match scenario::run(&config) {
        Ok(summary) => {
            println!("logstream-e2e: passed: {summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("logstream-e2e: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
