//! The `batchgate` command: parses the command line and calls into the library
//! (the gateway and simulator, or the client commands in `batchgate::cli`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use batchgate::cli::ClientCommand;
use batchgate::config::{Config, ConfigLayer};
use batchgate::server::App;
use batchgate::sim::SimConfig;
use clap::{Parser, Subcommand};

/// mimalloc rather than glibc's malloc: a watch fan-out allocates and frees a few
/// buffers per stream per message on every worker at once, where glibc spent about a
/// fifth of the CPU in `free` and its consolidation (the FINAL reached 10 000 watchers
/// in 350-430 ms with glibc, 200-260 ms with mimalloc; docs/BENCHMARKS.md, issue 8).
/// Freed memory goes back to the OS through `heap_trim`, as it did with glibc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One gRPC endpoint for batch LLM inference on Sutro jobs and xAI batches.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. With no Sutro URL it serves the built-in simulator, no keys needed.
    Serve {
        /// A TOML file of settings (keys as below, e.g. `sutro_base_url = "..."`);
        /// flags and BATCHGATE_* variables override it.
        #[arg(long, env = "BATCHGATE_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: ConfigLayer,
    },
    /// Run the upstream simulator on its own: Sutro's `/v1` API and xAI's `/v1/batches`
    /// API on one port, for demos and tests (Sutro key `sk_sim_demo`, xAI key `xai-sim-demo`).
    ///
    /// One request can be faulted with an `x-sim-fault` header: `status=503`,
    /// `status=429;retry-after=2`, `delay-ms=3000` or `drop-after=2` (lines of the answer).
    Sim {
        /// Address to serve HTTP on.
        #[arg(long, env = "BATCHGATE_SIM_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[command(flatten)]
        sim: SimConfig,
    },
    /// Print the settings `serve` would run with, as a TOML file `--config` accepts
    /// (secrets left out: API keys and Redis passwords are only said to be set), and exit.
    CheckConfig {
        /// A TOML file of settings.
        #[arg(long, env = "BATCHGATE_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: ConfigLayer,
    },
    /// The client commands (`watch`, `jobs`, `batches`, `health`), against a gateway.
    #[command(flatten)]
    Client(ClientCommand),
}

/// The flags and environment over the file, if any.
fn merge(file: Option<PathBuf>, settings: ConfigLayer) -> Result<ConfigLayer, String> {
    let file = match file {
        Some(path) => ConfigLayer::from_toml_file(&path).map_err(|e| e.to_string())?,
        None => ConfigLayer::default(),
    };
    Ok(settings.over(file))
}

fn resolve(file: Option<PathBuf>, settings: ConfigLayer) -> Result<Config, String> {
    Config::resolve(merge(file, settings)?).map_err(|e| e.to_string())
}

/// Resolves the settings as `serve` would and prints them as TOML, secrets left out.
fn check_config(file: Option<PathBuf>, settings: ConfigLayer) -> Result<(), String> {
    let layer = merge(file, settings)?;
    let config = Config::resolve(layer.clone()).map_err(|e| e.to_string())?;
    // The TLS files are read at start; reading them here too lets a deploy check catch
    // a bad certificate before the gateway refuses to start.
    if let Some(files) = &config.tls {
        files.load()?;
    }
    let text = layer
        .effective(&config)
        .to_redacted_toml()
        .map_err(|e| e.to_string())?;
    print!("{text}");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match batchgate::runtime::build() {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(error) => {
            eprintln!("batchgate: cannot start the Tokio runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Client(command) => return batchgate::cli::run(command).await,
        Command::Serve { config, settings } => serve(config, settings).await,
        Command::Sim { listen, sim } => simulate(listen, sim).await,
        Command::CheckConfig { config, settings } => check_config(config, settings),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("batchgate: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(file: Option<PathBuf>, settings: ConfigLayer) -> Result<(), String> {
    let config = resolve(file, settings)?;
    // Read once: traces and metrics export as the same settings say.
    let telemetry = batchgate::telemetry::TelemetrySettings::from_env(
        config.log_format,
        config.otlp_endpoint.as_deref(),
    )?;
    let _telemetry = batchgate::telemetry::init_with(&telemetry)?;
    if !batchgate::runtime::lifo_slot_off() {
        tracing::warn!(
            "built without --cfg tokio_unstable: Tokio's LIFO slot stays on and watch fan-out is slower (see src/runtime.rs)"
        );
    }
    let app = App::start_with_telemetry(config, &telemetry)
        .await
        .map_err(|e| e.to_string())?;
    // mimalloc returns what a burst of large creates freed only when asked; see heap_trim.
    batchgate::heap_trim::spawn_trimmer();
    app.run_until_signal().await.map_err(|e| e.to_string())
}

async fn simulate(listen: SocketAddr, sim: SimConfig) -> Result<(), String> {
    let _telemetry = batchgate::telemetry::init(Default::default(), None)?;
    let handle = batchgate::sim::start(sim, listen)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(sutro = %handle.sutro_base_url(), xai = %handle.xai_base_url(), "simulator is serving");
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
    handle.shutdown().await;
    Ok(())
}
