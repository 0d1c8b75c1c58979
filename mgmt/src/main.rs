//! `bulkhead`: the container micro-segmentation appliance.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use mgmt::explain::{explain_command, ExplainArgs};
use mgmt::lint::check_command;
use mgmt::run::{run, RunOptions};

#[derive(Parser)]
#[command(name = "bulkhead", version, about = "Inline container micro-segmentation on DPDK")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the appliance: take over the configured ports and enforce the policy.
    Run {
        /// The configuration file (appliance section and policy).
        #[arg(long, short)]
        config: PathBuf,
        /// Stop by itself after this many seconds (default: run until SIGINT/SIGTERM).
        #[arg(long)]
        duration: Option<f64>,
        /// Print the counters every this many seconds.
        #[arg(long)]
        stats_interval: Option<f64>,
    },
    /// Validate and compile a policy file; print warnings. Exit 0 when loadable, 2 when not.
    Check {
        /// The configuration or policy file.
        file: PathBuf,
    },
    /// Show how the policy decides one packet: segments, rule, verdict and why.
    /// Exit 0 when allowed, 1 when denied, 2 on bad input.
    Explain(ExplainArgs),
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, duration, stats_interval } => {
            let options = RunOptions {
                duration: duration.map(Duration::from_secs_f64),
                stats_interval: stats_interval.map(Duration::from_secs_f64),
            };
            match run(&config, &options) {
                Ok(snapshot) => {
                    println!("bulkhead: stopped; final counters:");
                    print!("{}", snapshot.report());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("bulkhead: error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Check { file } => {
            let mut out = Vec::new();
            let code = check_command(&file, &mut out);
            let text = String::from_utf8_lossy(&out);
            if code == 0 {
                print!("{text}");
            } else {
                eprint!("{text}");
            }
            exit(code)
        }
        Command::Explain(args) => exit(explain_command(&args, &mut std::io::stdout())),
    }
}
