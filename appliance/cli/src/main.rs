//! `mldefender`: the one binary of the appliance.
//!
//! `main` reads as the start-up story: parse the command line, run the subcommand,
//! map the outcome to one exit code. Only this crate prints to the terminal and
//! decides exit codes.

mod exit;
mod flows;
mod output;
mod summary;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::exit::Exit;

/// ml-defender: a network-security gateway appliance.
#[derive(Debug, Parser)]
#[command(name = "mldefender", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Extract bidirectional flows and CIC-IDS2017 features from pcap/pcapng files.
    ///
    /// The files are read in the order given, as one capture. One record per flow goes
    /// to stdout (or --output); a one-line summary goes to stderr.
    Flows(FlowsArgs),
    /// Check or print the appliance configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, clap::Args)]
struct FlowsArgs {
    /// Capture files (pcap or pcapng: Ethernet, VLAN, Linux cooked, raw IP).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Record format; defaults to `output.format` of the configuration.
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Configuration file for flow timeouts, table size and windows (default: built in).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Write records to this file instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print a human-readable summary to stdout instead of one record per flow.
    #[arg(long)]
    summary: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Csv,
    Jsonl,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate configuration files with the daemon's own code path; list every error.
    ///
    /// Exit status 0 when all files are valid, 64 otherwise.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print the complete default configuration, with a comment on every key.
    Example,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Flows(args) => flows::run(flows::FlowsOptions {
            files: args.files,
            format: args.format.map(|format| match format {
                FormatArg::Csv => mld_config::OutputFormat::Csv,
                FormatArg::Jsonl => mld_config::OutputFormat::Jsonl,
            }),
            config: args.config,
            output: args.output,
            summary: args.summary,
        }),
        Command::Config(ConfigCommand::Check { files }) => config_check(&files),
        Command::Config(ConfigCommand::Example) => {
            print!("{}", mld_config::EXAMPLE);
            Ok(Exit::Success)
        }
    };
    match outcome {
        Ok(exit) => exit.into(),
        Err(error) => {
            eprintln!("mldefender: error: {error:#}");
            Exit::Failure.into()
        }
    }
}

fn config_check(files: &[PathBuf]) -> anyhow::Result<Exit> {
    let mut exit = Exit::Success;
    for file in files {
        match mld_config::Config::from_file(file) {
            Ok(_) => println!("{}: ok", file.display()),
            Err(errors) => {
                eprintln!("{errors}");
                exit = Exit::Config;
            }
        }
    }
    Ok(exit)
}
