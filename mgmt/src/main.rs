//! `bulkhead`: the container micro-segmentation appliance.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

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
    }
}
