//! `brook`: the broker binary. `brook serve` (the default) runs the broker.

mod config_file;
mod limits;
mod serve;

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use serve::{ServeArgs, serve};

#[derive(Parser, Debug)]
#[command(
    name = "brook",
    version,
    about = "A RabbitMQ Streams compatible message-stream broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `serve` options, for running without a subcommand.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the broker (the default).
    Serve(Box<ServeArgs>),
    /// Measure a broker (brook or RabbitMQ): publish, consume, end-to-end, offset tracking.
    Bench {
        #[command(subcommand)]
        scenario: brook_bench::Scenario,
    },
    /// A broker that stores nothing, confirms every publish at once and feeds every consumer
    /// the same chunk: the machine's limit, for benchmarks (docs/BENCHMARKS.md).
    NullBroker(brook_bench::null_broker::NullBrokerArgs),
    /// Operate a running brook over its management API, with rabbitmqctl's and
    /// rabbitmq-streams' command names (list_stream_consumers, add_user, set_permissions, ...).
    Ctl(brook_ctl::CtlArgs),
    /// Check a data directory offline: every segment, index, CRC and metadata file. Changes
    /// nothing. Exit status 1 if a stream is damaged (would not open), 0 otherwise.
    Verify {
        /// The data directory (best checked while brook is stopped).
        data_dir: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let matches = Cli::command().get_matches_from(argv.clone());
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Some(Command::Verify { data_dir }) => verify(&data_dir),
        Some(Command::Ctl(args)) => ctl(args),
        command => match with_config_file(Cli { command, ..cli }, &matches, argv) {
            Ok(cli) => run_with(cli),
            Err(e) => {
                eprintln!("brook: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

/// The arguments again, with `--config`'s settings under the flags and environment.
fn with_config_file(cli: Cli, matches: &ArgMatches, argv: Vec<OsString>) -> anyhow::Result<Cli> {
    let (file, serve_matches, insert_at) = match &cli.command {
        Some(Command::Serve(args)) => {
            let at = argv.iter().position(|a| a == "serve").map_or(1, |i| i + 1);
            let Some(sub) = matches.subcommand_matches("serve") else {
                return Ok(cli);
            };
            (args.config.clone(), sub, at)
        }
        None => (cli.serve.config.clone(), matches, 1),
        Some(_) => return Ok(cli),
    };
    let Some(file) = file else {
        return Ok(cli);
    };
    let serve_command = ServeArgs::augment_args(clap::Command::new("serve"));
    let argv = config_file::merge(&file, &serve_command, serve_matches, argv, insert_at)?;
    Cli::try_parse_from(argv).with_context(|| format!("settings of {}", file.display()))
}

fn ctl(args: brook_ctl::CtlArgs) -> std::process::ExitCode {
    let stdout = std::io::stdout();
    match brook_ctl::run(args, &mut stdout.lock()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}

fn run_with(cli: Cli) -> std::process::ExitCode {
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One clear line (with its causes), not a backtrace.
            eprintln!("brook: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match cli.command {
        Some(Command::Serve(args)) => runtime.block_on(serve(*args)),
        None => runtime.block_on(serve(cli.serve)),
        Some(Command::Bench { scenario }) => runtime.block_on(bench(scenario)),
        Some(Command::NullBroker(args)) => {
            let listen = args.listen;
            runtime
                .block_on(brook_bench::null_broker::serve(args))
                .with_context(|| format!("null broker on {listen}"))
        }
        Some(Command::Verify { .. } | Command::Ctl(_)) => Ok(()),
    }
}

fn verify(data_dir: &std::path::Path) -> std::process::ExitCode {
    match brook_broker::verify_data_dir(&brook_storage::Disk, data_dir) {
        Ok(report) => {
            println!("{report}");
            if report.worst() == Some(brook_broker::Severity::Damaged) {
                std::process::ExitCode::FAILURE
            } else {
                std::process::ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("brook: reading {}: {e}", data_dir.display());
            std::process::ExitCode::from(2)
        }
    }
}

async fn bench(scenario: brook_bench::Scenario) -> anyhow::Result<()> {
    let json = scenario.common().json;
    let addr = scenario.common().addr;
    let report = brook_bench::run(scenario)
        .await
        .with_context(|| format!("benchmarking {addr}"))?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.summary());
    }
    Ok(())
}
