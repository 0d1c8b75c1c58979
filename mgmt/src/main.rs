//! `bulkhead`: the container micro-segmentation appliance.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use mgmt::control;
use mgmt::explain::{explain_command, ExplainArgs};
use mgmt::lint::check_command;
use mgmt::run::{parse_seconds, run, RunOptions};

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
        #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, allow_negative_numbers = true)]
        duration: Option<Duration>,
        /// Print the counters every this many seconds.
        #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, allow_negative_numbers = true)]
        stats_interval: Option<Duration>,
    },
    /// Validate and compile a policy file; print warnings. Exit 0 when loadable, 2 when not.
    Check {
        /// The configuration or policy file.
        file: PathBuf,
    },
    /// Show how the policy decides one packet: segments, rule, verdict and why.
    /// Exit 0 when allowed, 1 when denied, 2 on bad input.
    Explain(ExplainArgs),
    /// Ask a running appliance what it runs: versions, policy and its digest, uptime,
    /// reloads. Exit 0, or 2 when it cannot be reached.
    Status {
        /// The control socket (default: $RUNTIME_DIRECTORY/bulkhead.sock, else
        /// /run/bulkhead/bulkhead.sock for root).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Print a running appliance's counters. Exit 0, or 2 when it cannot be reached.
    Stats {
        /// The control socket (default as for `status`).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write the policy learned from discover-mode segments: one allow rule per kind of
    /// traffic observed, to review and load before switching them to protect.
    Learn {
        /// Where to write the policy YAML.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The control socket (default as for `status`).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Make a running appliance reload its policy file. Exit 0 when the new policy is in
    /// force, 1 when it was refused (the running one is kept), 2 when unreachable.
    Reload {
        /// The control socket (default as for `status`).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
}

fn socket_or_default(socket: Option<PathBuf>) -> PathBuf {
    socket.unwrap_or_else(control::default_socket_path)
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, duration, stats_interval } => {
            let options = RunOptions { duration, stats_interval };
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
        Command::Status { socket } => {
            exit(control::status_command(&socket_or_default(socket), &mut std::io::stdout(), &mut std::io::stderr()))
        }
        Command::Stats { socket, json } => exit(control::stats_command(
            &socket_or_default(socket),
            json,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        )),
        Command::Learn { out, socket } => exit(control::learn_command(
            &socket_or_default(socket),
            &out,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        )),
        Command::Reload { socket } => {
            exit(control::reload_command(&socket_or_default(socket), &mut std::io::stdout(), &mut std::io::stderr()))
        }
    }
}
