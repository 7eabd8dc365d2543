//! The hashroll binary: parse flags (before any connection), set up logging, run until SIGTERM.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use hashroll::cli::{Args, Command, LogFormat};

fn main() -> ExitCode {
    // Before any thread exists: glibc fixes its arena limit when a second thread first allocates.
    hashroll::tune_allocator();
    // An invalid flag exits 2 here, naming the flag, before any connection.
    let args = Args::parse();
    init_logging(&args);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hashroll: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Explain(explain)) = &args.command {
        return match runtime.block_on(hashroll::explain::run(&args, explain)) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hashroll explain: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match runtime.block_on(hashroll::app::run(args, wait_for_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "hashroll stopped");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(args: &Args) {
    // `explain` prints its answer on stdout; the controller's info lines would only be noise on stderr.
    let level = match args.command {
        Some(Command::Explain(_)) if args.log_level == "info" => "warn",
        _ => args.log_level.as_str(),
    };
    let filter = tracing_subscriber::EnvFilter::new(level);
    // Colours only for a terminal: logs collected from a file or a pod must stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
